"""The search space: define-by-run suggestions are valid genomes; knobs are conditional and clamped."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest

from nas import NasError, load_study
from nas.space import SearchSpace, clamp_knobs
from nas.study import parse_study
from nas.testing import tiny_study_text
from operators import MIXERS, POS_ENCODINGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_space() -> SearchSpace:
    return SearchSpace(load_study(ROOT / "studies" / "quickstart.toml"))


def test_random_genomes_are_valid_and_varied(quick_space):
    rng = random.Random(0)
    genomes = [quick_space.sample(rng) for _ in range(150)]
    for g in genomes:
        g.validate()
        assert g.img_size == 16 and g.num_classes == 10
        assert g.img_size % g.total_stride == 0
    mixers = {s.mixer for g in genomes for s in g.stages}
    assert mixers == {m.name for m in quick_space.space.mixers}  # every mixer of the study is drawn
    assert {len(g.stages) for g in genomes} >= {1, 2, 3}
    assert len({g.arch_id for g in genomes}) > 140


def test_optuna_define_by_run_conditional_knobs(quick_space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        g = quick_space.suggest(trial)
        study.tell(trial, 0.0)
        names = set(trial.params)
        for i, s in enumerate(g.stages):
            prefix = "iso" if len(g.stages) == 1 else f"s{i}"
            knob_params = {n for n in names if n.startswith(f"{prefix}.")}
            # a window size is asked only when the stage's mixer has windows
            assert (f"{prefix}.window.window_size" in knob_params) == (s.mixer == "window")
            assert not any(n.startswith(f"{prefix}.pool.") for n in knob_params)  # pool: no searched knobs


def test_knobs_are_clamped_to_the_grid_and_width():
    window = MIXERS.get("window")
    k = clamp_knobs(window, 48, (2, 2), {"num_heads": 5, "window_size": 4})
    assert k["window_size"] == 2 and 48 % k["num_heads"] == 0 and k["num_heads"] == 4
    assert window.check(48, (2, 2), k) is None
    sra = MIXERS.get("sra")
    assert clamp_knobs(sra, 32, (2, 2), {"num_heads": 2, "sr_ratio": 4})["sr_ratio"] == 2


def test_unsupported_attention_position_falls_back(quick_space):
    rng = random.Random(1)
    for _ in range(100):
        g = quick_space.sample(rng)
        for s in g.stages:
            if POS_ENCODINGS.get(s.pos).placement == "attention":
                assert s.pos in MIXERS.get(s.mixer).supported_pos, (s.mixer, s.pos)


def test_patch_that_does_not_divide_the_image_is_rejected():
    text = tiny_study_text().replace("patch_size = [2, 4]", "patch_size = [3]")
    with pytest.raises(NasError, match="does not divide img_size=16"):
        SearchSpace(parse_study(text))


def test_new_registered_mixers_are_accepted_by_name():
    names = [n for n in MIXERS.names()]
    text = tiny_study_text().replace("[space.mixers.pool]", "[space.mixers.pool]\n" + "\n".join(
        f"[space.mixers.{n}]" for n in names if n not in ("attention", "pool", "sepconv")))
    spec = parse_study(text)
    assert {m.name for m in spec.space.mixers} == set(names)


def test_rope_falls_back_where_the_head_width_does_not_fit():
    text = tiny_study_text().replace('pos = ["none", "sincos"]', 'pos = ["rope_axial"]')
    space = SearchSpace(parse_study(text))
    rng = random.Random(0)
    used = 0
    for _ in range(60):
        g = space.sample(rng)  # validates: never a genome RoPE cannot build
        for s in g.stages:
            if s.pos == "rope_axial":
                used += 1
                assert (s.dim // dict(s.mixer_knobs).get("num_heads", 1)) % 4 == 0
    assert used > 0
    # the rule itself: a stage whose head width is 6 gets no RoPE rather than an invalid genome
    stage = space._stage(1, 24, "attention", {"num_heads": 4}, "rope_axial", "mlp", 2.0, "none", None, (4, 4))
    assert stage.pos == "none"
