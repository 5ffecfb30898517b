"""A search with ``[latency] predict = true``: the latency cap is decided from the hybrid
predictor where it is sure, measured elsewhere, and every trial says which, with the version."""

from __future__ import annotations

from pathlib import Path

from evaluators.latency_predictor import PREDICTOR_VERSION, HybridPredictor
from nas import attrs
from nas.cli import main
from nas.front import load_trials
from nas.testing import tiny_study_text


def _study(tmp_path: Path, name: str, trials: int, predict: bool = True, cap: bool = True) -> Path:
    text = tiny_study_text(name, f"sqlite:///{tmp_path / 'store.db'}", trials=trials, sampler="random")
    if cap:
        text = text.replace('max_flops = "2M"', 'max_flops = "2M"\nmax_latency_ms = 1000.0')
    if predict:
        text = text.replace("[evaluator]", "[latency]\npredict = true\n\n[evaluator]")
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


def test_capped_search_predicts_once_the_predictor_has_learned(tmp_path):
    assert main(["search", str(_study(tmp_path, "lp", trials=30)), "--no-progress"]) == 0
    recs = sorted(load_trials(f"sqlite:///{tmp_path / 'store.db'}", "lp"), key=lambda r: r.number)
    with_latency = [r for r in recs if r.latency_ms is not None]
    sources = [r.user_attrs[attrs.LATENCY_SOURCE] for r in with_latency]
    assert set(sources) == {"measured", "predicted"}, sources
    distinct_measured: set[str] = set()
    for r in with_latency:
        ua = r.user_attrs
        assert ua[attrs.LATENCY_PREDICTOR_VERSION] == PREDICTOR_VERSION
        assert ua[attrs.LATENCY_DEVICE].startswith("cpu: ") and ua[attrs.LATENCY_SETTING]["img_size"] == 16
        if ua[attrs.LATENCY_SOURCE] == "predicted":
            # the predictor needs 10 measured genomes first; then a 1000 ms cap is clearly met
            assert len(distinct_measured) >= 10
            lo, hi = ua[attrs.LATENCY_INTERVAL]
            assert 0 < lo < r.latency_ms < hi <= 1000.0 and r.feasible
            assert ua[attrs.LATENCY_SPREAD_MS] is None  # nothing was measured
        else:
            distinct_measured.add(r.arch_id)
            assert ua[attrs.LATENCY_SPREAD_MS] is not None
        assert r.constraints["max_latency_ms"] == r.latency_ms - 1000.0
    # the study's own predictor file holds what it learned from the study's measurements
    saved = HybridPredictor.load(tmp_path / "lp_latency_predictor_cpu.json")
    assert len(saved.rows) >= 10 and saved.fit_report["correction_models"] == len(saved.rows)


def test_predict_needs_a_latency_cap(tmp_path, capsys):
    assert main(["search", str(_study(tmp_path, "nocap", trials=2, cap=False)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "max_latency_ms" in err and "predict" in err and "Traceback" not in err
