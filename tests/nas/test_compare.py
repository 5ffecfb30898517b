"""``nas compare``: fitting to a FLOP budget, the statistics, and a tiny end-to-end run (2 mixers,
1 epoch, 48 digits per split, 16 px) stored as a study that ``nas front`` reads."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from nas import attrs
from nas.cli import main
from nas.compare import (
    COMPARE_MIXER,
    COMPARE_SEED,
    CompareConfig,
    MixerSummary,
    fit_to_budget,
    holm,
    significance,
    welch_p,
    with_mixer,
)
from nas.errors import NasError
from search_space import ArchSpec, StageSpec, StemSpec, build_model, get_preset


def tiny_skeleton(img_size: int = 16) -> ArchSpec:
    """Two stages (8x8 and 4x4 at 16 px) of global attention, head width 16."""
    return ArchSpec(StemSpec("patchify", 2), (StageSpec(1, 32, "attention", {"num_heads": 2}),
                                              StageSpec(1, 64, "attention", {"num_heads": 4}, downsample="conv")),
                    num_classes=10, img_size=img_size)


@pytest.mark.parametrize("mixer", ["window", "sra", "sepconv", "dcnv3", "halo"])
def test_fitted_models_are_within_two_percent_of_the_budget(mixer):
    from evaluators import count_flops

    skeleton = get_preset("pvt_v2_b0").replace(img_size=32, num_classes=10)
    budget = 5_000_000
    f = fit_to_budget(skeleton, mixer, budget, tolerance=0.02)
    assert abs(f.flops / budget - 1) <= 0.02
    # counted on the built model too, not only by the weight-free screening
    macs = int(count_flops(build_model(f.spec), input_size=(3, 32, 32)))
    assert abs(macs / budget - 1) <= 0.02, (macs, f.flops)
    assert all(s.mixer == mixer for s in f.spec.stages)
    assert all(w % 8 == 0 for w in f.widths) and f.widths == tuple(sorted(f.widths))  # pyramid kept


def test_fitting_changes_depth_when_no_width_gets_there():
    # a budget below what the narrowest 2-block model costs: the deep stage loses a block
    skeleton = tiny_skeleton().replace(stages=(StageSpec(1, 32, "pool"), StageSpec(3, 64, "pool", downsample="conv")))
    narrow = with_mixer(skeleton, "pool", (8, 8), (1, 3))
    from evaluators import screen

    budget = int(screen(with_mixer(skeleton, "pool", (8, 8), (1, 2))).flops)
    assert screen(narrow).flops > budget * 1.02
    f = fit_to_budget(skeleton, "pool", budget)
    assert f.depths == (1, 2) and abs(f.flops / budget - 1) <= 0.02


def test_skeleton_knobs_follow_the_mixer_and_the_grid():
    skeleton = get_preset("swin_tiny").replace(img_size=64, num_classes=10)  # grids 16, 8, 4, 2
    spec = with_mixer(skeleton, "window_cosine")
    knobs = [s.knob_dict for s in spec.stages]
    assert [k["window_size"] for k in knobs] == [7, 7, 4, 2]  # Swin's window, clamped to the grid
    assert [k["num_heads"] for k in knobs] == [3, 6, 12, 24]  # head width 32 as in the skeleton
    assert all(s.pos == "none" for s in spec.stages)  # rel_bias: not accepted by window_cosine
    assert [s.pos for s in with_mixer(skeleton, "window").stages] == ["rel_bias"] * 4
    assert "num_heads" not in with_mixer(skeleton, "dcnv3").stages[0].knob_dict


def test_unreachable_budget_names_the_closest_model():
    with pytest.raises(NasError, match=r"no width or depth .* within 2% of the budget 100 MACs; closest: widths"):
        fit_to_budget(tiny_skeleton(), "pool", 100)


def test_holm_and_welch():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # textbook Welch test: t = -3.674, df = 4 -> two-sided p = 0.0213
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.0213, abs=2e-4)
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0 and welch_p([0.5, 0.5], [0.7, 0.7]) == 0.0
    assert math.isnan(welch_p([0.5], [0.7, 0.8]))


def test_significance_separates_a_gap_from_noise():
    f = fit_to_budget(tiny_skeleton(), "pool", 400_000, tolerance=0.05)
    s = [MixerSummary("a", f, [0.90, 0.91, 0.92]), MixerSummary("b", f, [0.60, 0.61, 0.62]),
         MixerSummary("c", f, [0.89, 0.93, 0.91])]
    tests = {(t.a, t.b): t for t in significance(s)}  # (higher mean, lower mean)
    assert tests[("a", "b")].significant and tests[("c", "b")].significant
    assert not tests[("a", "c")].significant  # equal means, different spreads
    assert tests[("a", "b")].diff == pytest.approx(0.30)


def test_config_rejects_a_single_mixer():
    with pytest.raises(NasError, match="at least two different mixers"):
        CompareConfig(mixers=("window",))


def test_compare_end_to_end_stores_a_study_front_can_read(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    genome = tmp_path / "skeleton.json"
    genome.write_text(tiny_skeleton().to_json())
    url = f"sqlite:///{tmp_path / 'cmp.db'}"
    args = ["compare", str(genome), "--mixers", "pool,dcnv3", "--flops", "400K", "--tolerance", "0.05",
            "--seeds", "0,1", "--epochs", "1", "--subset", "48", "--img-size", "16", "--device", "cpu",
            "--study", "cmp_tiny", "--storage", url, "--html", str(tmp_path / "cmp.html")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Welch's t-test" in out and "pool" in out and "dcnv3" in out and "plot:" in out
    trials = optuna.load_study(study_name="cmp_tiny", storage=url).get_trials()
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted((t.user_attrs[COMPARE_MIXER], t.user_attrs[COMPARE_SEED]) for t in trials) == [
        ("dcnv3", 0), ("dcnv3", 1), ("pool", 0), ("pool", 1)]
    for t in trials:
        ua = t.user_attrs
        assert abs(ua[attrs.FLOPS] / 400_000 - 1) <= 0.05 and t.values[1] == ua[attrs.FLOPS]
        assert 0 <= ua[attrs.ACCURACY] <= 1 and t.values[0] == ua[attrs.ACCURACY]
        assert ua[attrs.LATENCY_MS] > 0 and ua[attrs.GENOME] and ua[attrs.EPOCHS] == 1
    html = (tmp_path / "cmp.html").read_text()
    assert "plotly" in html and "dcnv3" in html
    # nas front reads the study from the store alone
    assert main(["front", "cmp_tiny", "--storage", url, "--json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and {m["genome"]["stages"][0]["mixer"] for m in front} <= {"pool", "dcnv3"}
    # a rerun reuses the finished runs (no new trials) and reports the same accuracies
    assert main([*args, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert len(optuna.load_study(study_name="cmp_tiny", storage=url).get_trials()) == 4
    by_mixer = {m["mixer"]: m for m in rep["mixers"]}
    stored = {(t.user_attrs[COMPARE_MIXER], t.user_attrs[COMPARE_SEED]): t.user_attrs[attrs.ACCURACY] for t in trials}
    assert by_mixer["pool"]["accuracies"] == [stored[("pool", 0)], stored[("pool", 1)]]
    assert len(rep["tests"]) == 1 and rep["test"].startswith("Welch")


def test_compare_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "preset:pvt_v2_b0", "--mixers", "window,windw", "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "did you mean 'window'" in err
    assert main(["compare", "preset:nope", "--mixers", "window,sra"]) == 2
    assert "unknown preset" in capsys.readouterr().err
