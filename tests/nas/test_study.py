"""Study files: parsing, validation messages (file and line, closest key, allowed values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas import NasError, StudySpec, load_study
from nas.study import parse_count, parse_study, spec_from_dict
from nas.testing import tiny_study_text

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_loads_with_defaults_resolved():
    spec = load_study(ROOT / "studies" / "quickstart.toml")
    assert isinstance(spec, StudySpec)
    assert spec.name == "quickstart"
    # the default store sits in studies/ whatever the cwd
    assert spec.storage == "sqlite:///" + str(ROOT / "studies" / "quickstart.db")
    assert spec.trials >= 15 and spec.data.dataset == "digits" and spec.evaluator.device == "cpu"
    assert spec.objective_names == ["accuracy", "flops"] and spec.directions == ["maximize", "minimize"]
    assert spec.constraints.max_flops == 8_000_000
    assert {m.name for m in spec.space.mixers} >= {"attention", "window", "pool"}


def test_every_checked_in_study_loads():
    files = sorted((ROOT / "studies").glob("*.toml"))
    assert len(files) >= 3
    for f in files:
        load_study(f)


@pytest.mark.parametrize("text,expected", [
    ("50M", 50_000_000), ("1.3G", 1_300_000_000), ("800K", 800_000), (12000, 12000), ("0.5m", 500_000),
])
def test_parse_count(text, expected):
    assert parse_count(text, "max_flops") == expected


def test_parse_count_rejects_garbage():
    with pytest.raises(NasError, match="like 50M"):
        parse_count("fifty", "max_flops")


def _err(text: str) -> str:
    with pytest.raises(NasError) as e:
        parse_study(text, "s.toml")
    return str(e.value)


def test_toml_syntax_error_names_file_and_line():
    msg = _err('[study]\nname = "x"\ntrials = = 3\n')
    assert msg.startswith("s.toml, line 3") and "not valid TOML" in msg


def test_unknown_key_names_closest_and_line():
    text = tiny_study_text().replace('sampler = "nsga2"', 'sampeler = "nsga2"')
    msg = _err(text)
    assert "unknown key 'sampeler'" in msg and "did you mean 'sampler'" in msg
    line = text.splitlines().index('sampeler = "nsga2"') + 1
    assert f"line {line}" in msg


def test_unknown_mixer_knob_is_checked_against_the_mixer():
    text = tiny_study_text().replace("num_heads = [1, 2]", "num_head = [1, 2]")
    msg = _err(text)
    assert "mixer 'attention' has no knob 'num_head'" in msg and "did you mean 'num_heads'" in msg


def test_knob_type_is_checked():
    msg = _err(tiny_study_text().replace("num_heads = [1, 2]", 'num_heads = ["two"]'))
    assert "knob 'num_heads' takes int values" in msg


def test_unknown_mixer_lists_registered_ones():
    msg = _err(tiny_study_text().replace("[space.mixers.pool]", "[space.mixers.pooling]"))
    assert "unknown token mixer 'pooling'" in msg and "'pool'" in msg


def test_wrong_type_and_range_say_what_is_allowed():
    assert "'trials' must be an integer >= 1" in _err(tiny_study_text(trials=0))
    msg = _err(tiny_study_text(sampler="cmaes"))
    assert "'sampler' must be one of evolution, evolution_plain, nsga2, tpe, gp, random" in msg
    msg = _err(tiny_study_text(max_flops="lots"))
    assert "max_flops" in msg and "50M" in msg
    msg = _err(tiny_study_text(objectives=("accuracy", "energy")))
    assert "'energy' is not allowed" in msg and "latency_ms" in msg


def test_pruning_applies_to_single_objective_or_ray():
    fid = 'batch_size = 32\nfidelity = { pruner = "median" }'
    multi = parse_study(tiny_study_text().replace("batch_size = 32", fid))
    assert multi.evaluator.fidelity.pruner == "median" and not multi.prunes
    assert multi.replace(backend="ray").prunes
    single = parse_study(tiny_study_text(objectives=("accuracy",)).replace("batch_size = 32", fid))
    assert single.prunes


def test_relative_sqlite_resolves_against_base_dir(tmp_path):
    spec = parse_study(tiny_study_text(storage="sqlite:///studies/t.db"), base_dir=tmp_path)
    assert spec.storage == "sqlite:///" + str(tmp_path / "studies" / "t.db")
    spec = parse_study(tiny_study_text(storage="postgresql://postgres@127.0.0.1:5432/test"), base_dir=tmp_path)
    assert spec.storage == "postgresql://postgres@127.0.0.1:5432/test"


def test_spec_json_round_trip():
    import json

    for f in sorted((ROOT / "studies").glob("*.toml")):
        spec = load_study(f)
        assert spec_from_dict(json.loads(spec.to_json())) == spec, f
    spec = parse_study(tiny_study_text())
    assert spec_from_dict(json.loads(spec.to_json())) == spec


def test_missing_file_is_one_line():
    with pytest.raises(NasError, match="does not exist"):
        load_study("studies/nope.toml")
