"""One network, one arch_id: the id hashes the genome's canonical form (issue 13 item 8)."""

from __future__ import annotations

import hashlib

import pytest

from operators import MIXERS, STEMS
from search_space import PRESETS, ArchSpec, StageSpec, StemSpec, build_model


def _spec(knobs=None, depth=2, mixer="window", stem=None, **stage) -> ArchSpec:
    return ArchSpec(stem=stem or StemSpec("patchify", 4),
                    stages=(StageSpec(depth, 32, mixer, knobs or {}, **stage),), num_classes=10, img_size=32)


def test_a_knob_at_its_default_and_a_missing_knob_give_one_arch_id() -> None:
    """The issue's example: the same genome with a mixer knob at its default and without it."""
    bare = _spec({"num_heads": 2, "window_size": 4})
    explicit = _spec({"num_heads": 2, "window_size": 4, "qkv_bias": True, "shift": True})
    assert bare != explicit and bare.to_json() != explicit.to_json()  # the genome keeps what was written
    assert bare.arch_id == explicit.arch_id
    assert bare.canonical() == explicit.canonical()


@pytest.mark.parametrize("name", MIXERS.names())
def test_every_mixer_default_knob_is_the_same_network(name: str) -> None:
    cls = MIXERS.get(name)
    defaults = {k.name: k.default for k in cls.knobs().values()}
    assert _spec({}, mixer=name).arch_id == _spec(defaults, mixer=name).arch_id
    for k, knob in cls.knobs().items():  # each knob alone, at its default
        assert _spec({k: knob.default}, mixer=name).arch_id == _spec({}, mixer=name).arch_id, k


@pytest.mark.parametrize("kind", STEMS.names())
def test_every_stem_default_knob_is_the_same_network(kind: str) -> None:
    defaults = {k.name: k.default for k in STEMS.get(kind).knobs().values()}
    a = _spec({"num_heads": 2, "window_size": 4}, stem=StemSpec(kind, 4))
    b = _spec({"num_heads": 2, "window_size": 4}, stem=StemSpec(kind, 4, defaults))
    assert a.arch_id == b.arch_id


def test_different_knob_values_give_different_ids() -> None:
    base = _spec({"num_heads": 2, "window_size": 4})
    assert base.arch_id != _spec({"num_heads": 2, "window_size": 4, "qkv_bias": False}).arch_id
    assert base.arch_id != _spec({"num_heads": 2, "window_size": 4, "shift": False}).arch_id  # depth 2: shifts
    assert base.arch_id != _spec({"num_heads": 4, "window_size": 4}).arch_id
    assert base.arch_id != _spec({"num_heads": 2, "window_size": 2}).arch_id
    assert base.arch_id != base.replace(img_size=64).arch_id
    assert _spec({"num_heads": 2}, mixer="attention", layer_scale=1e-5).arch_id != \
        _spec({"num_heads": 2}, mixer="attention").arch_id


def test_knobs_that_cannot_change_the_network_are_normalised() -> None:
    # a one-block stage never shifts (only odd blocks do): shift is irrelevant there
    one = {"num_heads": 2, "window_size": 4}
    assert _spec({**one, "shift": False}, depth=1).arch_id == _spec(one, depth=1).arch_id
    assert _spec({**one, "shuffle": False}, depth=1, mixer="shuffle_window").arch_id == \
        _spec(one, depth=1, mixer="shuffle_window").arch_id
    # one focal level: the factor that grows later levels' kernels is unused
    assert _spec({"focal_level": 1, "focal_factor": 4}, mixer="focal_modulation").arch_id == \
        _spec({"focal_level": 1}, mixer="focal_modulation").arch_id
    assert _spec({"focal_level": 2, "focal_factor": 4}, mixer="focal_modulation").arch_id != \
        _spec({"focal_level": 2}, mixer="focal_modulation").arch_id
    # an int for a float knob; LayerScale 0 builds no LayerScale, like None
    assert _spec({"expansion_ratio": 2}, mixer="sepconv").arch_id == _spec({}, mixer="sepconv").arch_id
    assert _spec({}, mixer="sepconv", layer_scale=0.0).arch_id == _spec({}, mixer="sepconv").arch_id


@pytest.mark.parametrize("name", ["window", "shuffle_window", "focal_modulation"])
def test_normalised_knobs_really_build_the_same_network(name: str) -> None:
    """The context rules are true: the two genomes build models with the same outputs."""
    import torch

    knobs, dropped, depth = {"window": ({"num_heads": 2, "window_size": 4, "shift": False}, "shift", 1),
                             "shuffle_window": ({"num_heads": 2, "window_size": 4, "shuffle": False}, "shuffle", 1),
                             "focal_modulation": ({"focal_level": 1, "focal_factor": 4}, "focal_factor", 2)}[name]
    a = _spec(knobs, depth=depth, mixer=name)
    b = _spec({k: v for k, v in knobs.items() if k != dropped}, depth=depth, mixer=name)
    assert a.arch_id == b.arch_id
    torch.manual_seed(0)
    ma = build_model(a).eval()
    mb = build_model(b).eval()
    mb.load_state_dict(ma.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ma(x), mb(x), rtol=0, atol=0)


def test_canonical_form_is_idempotent_and_round_trips() -> None:
    for spec in (*PRESETS.values(), _spec({"num_heads": 2, "window_size": 4})):
        c = spec.canonical()
        assert c.canonical() == c and c.arch_id == spec.arch_id
        assert ArchSpec.from_json(c.to_json()) == c
        assert c.arch_id == hashlib.sha1(c.to_json().encode()).hexdigest()  # canonical genomes keep their id
        c.validate()


def test_canonical_form_of_an_invalid_genome_does_not_hide_the_error() -> None:
    bad = _spec({"num_heads": 2, "windw_size": 4})
    assert bad.arch_id  # computable
    with pytest.raises(ValueError, match="unknown knob 'windw_size'"):
        bad.validate()
    assert _spec({}, mixer="no_such_mixer").arch_id
