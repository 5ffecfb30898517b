"""The study schema is declared once: dataclass fields carry type, range and doc; fields shared
with the library (evaluators.DataSpec / ProxyConfig) are borrowed from it, and the study's
different defaults are listed in one place (STUDY_DEFAULTS)."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from evaluators.config import DataSpec as LibraryData
from evaluators.config import ProxyConfig
from nas import NasError
from nas import study as S
from nas.testing import tiny_study_text

SECTIONS = (S.StudySpec, S.DataSpec, S.SpaceSpec, S.ConstraintsSpec, S.LatencySpec, S.EvaluatorSpec,
            S.FidelitySpec, S.PresetsSpec, S.RaySpec)
MINIMAL = '[study]\nname = "minimal"\ntrials = 2\n'


def _borrowed() -> list[tuple[type, dataclasses.Field]]:
    return [(cls, f) for cls in SECTIONS for f in dataclasses.fields(cls) if "from" in f.metadata]


def test_every_field_of_every_table_has_a_doc():
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"


def test_shared_fields_are_borrowed_with_their_type_rules_and_defaults():
    owners = {"DataSpec": LibraryData, "ProxyConfig": ProxyConfig}
    borrowed = {(cls.__name__, f.name) for cls, f in _borrowed()}
    assert borrowed == {("DataSpec", n) for n in ("dataset", "root", "img_size", "subset", "image_column",
                                                  "label_column")} | {
        ("EvaluatorSpec", n) for n in ("epochs", "batch_size", "lr", "weight_decay", "device", "time_limit_s")}
    for cls, f in _borrowed():
        owner_name, name = f.metadata["from"].split(".")
        owner = owners[owner_name]
        (lib,) = [g for g in dataclasses.fields(owner) if g.name == name]
        assert typing.get_type_hints(cls)[f.name] == typing.get_type_hints(owner)[name], f.name
        assert f.metadata["doc"] == lib.metadata["doc"]
        for rule in ("min", "gt"):
            if rule in lib.metadata:
                assert f.metadata[rule] == lib.metadata[rule], (f.name, rule)
        # the default differs from the library's exactly where STUDY_DEFAULTS says so
        assert f.default == S.STUDY_DEFAULTS.get((owner, name), lib.default), f.name
        assert (f.default != lib.default) == ((owner, name) in S.STUDY_DEFAULTS), f.name
    assert S.STUDY_DEFAULTS == {(LibraryData, "img_size"): 16, (ProxyConfig, "epochs"): 3,
                                (ProxyConfig, "batch_size"): 64, (ProxyConfig, "device"): "cpu"}


def test_the_library_enforces_the_ranges_its_fields_declare():
    """A declared bound is the one the library's own validation applies (one declaration)."""
    for owner in (LibraryData, ProxyConfig):
        for f in dataclasses.fields(owner):
            for rule, bad in (("min", lambda v: v - 1), ("gt", lambda v: v)):
                if rule in f.metadata:
                    kw = {f.name: type(f.metadata[rule])(bad(f.metadata[rule]))}
                    with pytest.raises(NasError):
                        owner(**kw)
                    ok = f.metadata[rule] + (1 if rule == "gt" else 0)
                    owner(**{f.name: type(f.metadata[rule])(ok) if f.name != "subset" else max(2, ok)})


def test_study_defaults_are_todays():
    spec = S.parse_study(MINIMAL, "m.toml")
    assert (spec.evaluator.epochs, spec.evaluator.batch_size, spec.evaluator.device) == (3, 64, "cpu")
    assert (spec.evaluator.lr, spec.evaluator.weight_decay, spec.evaluator.time_limit_s) == (2e-3, 0.05, None)
    assert (spec.data.dataset, spec.data.img_size, spec.data.subset, spec.data.root) == ("digits", 16, None, None)
    assert spec.evaluator.fidelity == S.FidelitySpec("none", 1, 3)
    assert spec.constraints.limits() == {} and spec.latency == S.LatencySpec("cpu", 1, "float32")


@pytest.mark.parametrize("old,new,expected", [
    ("epochs = 2", "epochs = 0", "[evaluator] 'epochs' must be an integer >= 1, got 0"),
    ("batch_size = 32", "batch_size = 32\nlr = 0", "[evaluator] 'lr' must be a positive number, got 0.0"),
    ("batch_size = 32", "batch_size = 32\ndevice = \"tpu\"", "[evaluator] 'device' must be one of cpu, cuda, auto"),
    ("img_size = 16", "img_size = 2000", "[data] 'img_size' must be an integer between 4 and 1024, got 2000"),
    ("img_size = 16", "img_sise = 16", "[data] unknown key 'img_sise' (did you mean 'img_size'?)"),
    ("batch_size = 32", "batch_size = 32\nfidelity = { min_epoch = 2 }",
     "[evaluator.fidelity] unknown key 'min_epoch' (did you mean 'min_epochs'?)"),
])
def test_borrowed_and_nested_fields_keep_file_line_and_closest_key(old, new, expected):
    text = tiny_study_text(kind="proxy").replace(old, new)
    with pytest.raises(NasError) as e:
        S.parse_study(text, "s.toml")
    msg = str(e.value)
    changed = new.splitlines()[-1]
    line = text.splitlines().index(changed) + 1
    assert msg.startswith(f"s.toml, line {line}: "), msg
    assert expected in msg


def test_a_stored_spec_missing_newer_fields_rebuilds_with_defaults():
    spec = S.parse_study(tiny_study_text(kind="proxy"), "s.toml")
    d = json.loads(spec.to_json())
    del d["evaluator"]["save_weights"], d["ray"], d["space"]["layer_scale"]
    again = S.spec_from_dict(d)
    assert again == spec  # those were at their defaults
    assert isinstance(again.space.stems[0].patch_sizes, tuple) and isinstance(again.space.width, S.IntRange)
