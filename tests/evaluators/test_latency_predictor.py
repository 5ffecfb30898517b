"""The hybrid latency predictor (kernel sum x learned correction), its refits from a study's
latency cache, and deciding a latency cap from its interval.

The learning tests use a synthetic device: kernel times and whole-model "measurements" are
functions of the genome, so they are exact and fast; real timing is covered by
``test_latency.py`` and ``benchmarks/latency.py``.
"""

from __future__ import annotations

import math
import random
import uuid

import pytest

from evaluators.kernels import arch_kernels
from evaluators.latency import LatencyCache, LatencyResult, cpu_name
from evaluators.latency_predictor import (
    PREDICTOR_VERSION,
    HybridPredictor,
    Interval,
    LatencyDecision,
    StudyPredictor,
    _features,
    _group,
    decide_latency,
    kernel_id,
)
from evaluators.random_genomes import random_genome
from nas.errors import NasError

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


# --- decide_latency ------------------------------------------------------------------------
class _Fixed:
    version = PREDICTOR_VERSION

    def __init__(self, ms: float, lo: float, hi: float) -> None:
        self.iv = Interval(ms, lo, hi, ms, 0)

    def predict_interval(self, spec, img_size=None):
        return self.iv


class _Uncalibrated:
    version = PREDICTOR_VERSION

    def predict_interval(self, spec, img_size=None):
        raise NasError("the latency predictor has no regression for unseen kernels; calibrate it first")


SPEC = random_genome(random.Random(3), img_size=32, num_classes=10)


def _measure(value: float, calls: list[int]):
    def fn() -> float:
        calls.append(1)
        return value
    return fn


def test_clearly_over_the_cap_is_decided_without_measuring():
    calls: list[int] = []
    d = decide_latency(SPEC, 10.0, _Fixed(14.0, 11.0, 18.0), _measure(99.0, calls))
    assert calls == [] and d == LatencyDecision(14.0, "predicted", PREDICTOR_VERSION, True, 11.0, 18.0, 14.0)
    # also when latency is an objective: an infeasible candidate needs no value
    d = decide_latency(SPEC, 10.0, _Fixed(14.0, 11.0, 18.0), _measure(99.0, calls), need_value=True)
    assert calls == [] and d.over_cap and d.source == "predicted"


def test_clearly_under_the_cap_is_decided_unless_the_value_is_needed():
    calls: list[int] = []
    d = decide_latency(SPEC, 10.0, _Fixed(7.0, 6.0, 9.5), _measure(8.0, calls))
    assert calls == [] and d.source == "predicted" and not d.over_cap and d.latency_ms == 7.0
    d = decide_latency(SPEC, 10.0, _Fixed(7.0, 6.0, 9.5), _measure(8.0, calls), need_value=True)
    assert calls == [1] and d.source == "measured" and d.latency_ms == 8.0 and d.predicted_ms == 7.0


def test_the_uncertain_band_is_measured_and_the_measurement_decides():
    for measured, over in ((10.5, True), (9.0, False)):
        calls: list[int] = []
        d = decide_latency(SPEC, 10.0, _Fixed(9.8, 8.0, 12.0), _measure(measured, calls))
        assert calls == [1] and d.source == "measured" and d.over_cap is over and d.latency_ms == measured
        assert (d.lo, d.hi) == (8.0, 12.0)
    # the cap on an interval's edge: hi == cap is under (latency <= cap is feasible)
    calls = []
    assert not decide_latency(SPEC, 12.0, _Fixed(9.8, 8.0, 12.0), _measure(1.0, calls)).over_cap and not calls


def test_no_usable_prediction_measures():
    for pred in (None, _Uncalibrated(), _Fixed(5.0, 0.0, math.inf)):
        calls: list[int] = []
        d = decide_latency(SPEC, 10.0, pred, _measure(3.0, calls))
        assert calls == [1] and d.source == "measured" and d.latency_ms == 3.0 and not d.over_cap
        assert d.lo is None and d.hi is None
        assert d.predictor_version == (None if pred is None else PREDICTOR_VERSION)


# --- the hybrid on a synthetic device ------------------------------------------------------
def _kernel_ms(k) -> float:
    f = _features(k, 1)
    return 0.02 + f[0] / 200 + f[1] / 400


def _fill_table(pred: HybridPredictor, specs) -> None:
    for s in specs:
        for k in arch_kernels(s):
            pred.table[kernel_id(k)] = dict(ms=_kernel_ms(k), spread=0.0, group=_group(k), features=_features(k, 1),
                                             label=k.label)


def _true_ms(spec) -> float:
    """Kernel sum times a context effect no kernel sees: pooling stages run 1.5x slower in a
    model, and each extra stage adds 15%."""
    base = sum(k.count * _kernel_ms(k) for k in arch_kernels(spec))
    pool = sum(s.depth for s in spec.stages if s.mixer == "pool") / sum(s.depth for s in spec.stages)
    return base * (1 + 0.5 * pool) * (1 + 0.15 * (len(spec.stages) - 1))


@pytest.fixture(scope="module")
def synthetic():
    train = [random_genome(random.Random(100 + i), img_size=32, num_classes=10) for i in range(60)]
    test = [random_genome(random.Random(900 + i), img_size=32, num_classes=10) for i in range(20)]
    pred = HybridPredictor(min_models=10, coverage=0.9)
    _fill_table(pred, train + test)
    for s in train:
        pred.add_measurement(s, _true_ms(s))
    pred.refit(measure_kernels=False)
    return pred, test


def test_the_correction_learns_what_the_kernel_sum_misses(synthetic):
    pred, test = synthetic
    rep = pred.fit_report
    assert rep["correction"] == "gbm" and rep["correction_models"] == 60
    assert rep["oof_median_abs_err"] < rep["oof_median_abs_err_kernel_sum"] / 2
    hyb = [abs(pred.predict(s) / _true_ms(s) - 1) for s in test]
    ker = [abs(pred.kernel_predict(s) / _true_ms(s) - 1) for s in test]
    assert sorted(hyb)[len(hyb) // 2] < sorted(ker)[len(ker) // 2] / 2
    assert sum(e <= 0.10 for e in hyb) >= 0.9 * len(test)
    # the interval is finite and holds most held-out values (90% target, 20 genomes)
    ivs = [pred.predict_interval(s) for s in test]
    assert all(iv.known and iv.lo < iv.ms < iv.hi for iv in ivs)
    assert sum(iv.lo <= _true_ms(s) <= iv.hi for iv, s in zip(ivs, test, strict=True)) >= 16


def test_too_few_measurements_give_no_interval():
    pred = HybridPredictor(min_models=10)
    specs = [random_genome(random.Random(100 + i), img_size=32, num_classes=10) for i in range(6)]
    _fill_table(pred, specs)
    for s in specs:
        pred.add_measurement(s, _true_ms(s))
    rep = pred.refit(measure_kernels=False)
    iv = pred.predict_interval(specs[0])
    assert not iv.known and (iv.lo, iv.hi) == (0.0, math.inf) and iv.ms == iv.kernel_ms
    assert rep["correction"] == "none" and "needs 10" in rep["reason"]
    with pytest.raises(NasError, match="positive"):
        pred.add_measurement(specs[0], 0.0)
    with pytest.raises(NasError, match="coverage"):
        HybridPredictor(coverage=1.0)


def test_saved_hybrid_predicts_the_same_after_load(synthetic, tmp_path):
    pred, test = synthetic
    path = pred.save(tmp_path / "hybrid.json")
    back = HybridPredictor.load(path)
    assert back.version == PREDICTOR_VERSION and len(back.rows) == 60
    for s in test[:5]:
        a, b = pred.predict_interval(s), back.predict_interval(s)
        assert (b.ms, b.lo, b.hi) == pytest.approx((a.ms, a.lo, a.hi), rel=1e-12)
    doc = path.read_text()
    assert '"kind": "hybrid"' in doc and f'"version": {PREDICTOR_VERSION}' in doc


# --- refits from the latency cache ---------------------------------------------------------
def _result(spec, ms: float, **over) -> LatencyResult:
    d = dict(median_ms=ms, spread_ms=0.0, mean_ms=ms, min_ms=ms, repeats=1, warmup=0, device="cpu",
             device_name=cpu_name(), batch=1, dtype="float32", img_size=spec.img_size, memory_format="contiguous",
             threads=1, torch_version=__import__("torch").__version__, clock="wall", arch_id=spec.arch_id)
    d.update(over)
    return LatencyResult(**d)


def _cache_measurements(url: str, table: str) -> None:
    cache = LatencyCache(url, table=table)
    try:
        specs = [random_genome(random.Random(100 + i), img_size=32, num_classes=10) for i in range(3)]
        for i, s in enumerate(specs):
            cache.put(_result(s, 1.0 + i))
            cache.put_genome(s)
        cache.put_genome(specs[0])  # again: kept, no error
        cache.put(_result(specs[0], 9.0, batch=4))                # another setting
        cache.put(_result(specs[1], 9.0, arch_id="timm:resnet18"))  # no genome known
        setting = HybridPredictor().to_setting()
        got = cache.measurements(**setting)
        assert sorted((s.arch_id, ms) for s, ms in got) == sorted((s.arch_id, 1.0 + i) for i, s in enumerate(specs))
        assert all(s.img_size == 32 for s, _ in got)
        assert [ms for _, ms in cache.measurements(**dict(setting, batch=4))] == [9.0]
    finally:
        cache.drop()


def test_cache_lists_a_settings_measurements_sqlite(tmp_path):
    _cache_measurements(f"sqlite:///{tmp_path / 'store.db'}", "latency")


def test_cache_lists_a_settings_measurements_postgresql():
    table = f"test_{uuid.uuid4().hex[:10]}_latency"
    try:
        LatencyCache(PG_URL, table=table).drop()
    except NasError as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    _cache_measurements(PG_URL, table)


def test_setting_matches_how_measurements_are_keyed():
    cpu = HybridPredictor(threads=1, clock="cpu").to_setting()
    assert (cpu["device"], cpu["threads"], cpu["clock"], cpu["device_name"]) == ("cpu", 1, "cpu", cpu_name())
    # a CUDA predictor (made from its JSON: no GPU here) reads rows keyed as measure_latency keys CUDA ones
    d = dict(HybridPredictor().to_dict(), device="cuda", device_name="NVIDIA H200")
    cuda = HybridPredictor._from_dict(d).to_setting()
    assert (cuda["device"], cuda["threads"], cuda["clock"]) == ("cuda", 0, "cuda_events")


def test_study_predictor_refits_from_the_cache(tmp_path):
    specs = [random_genome(random.Random(100 + i), img_size=32, num_classes=10) for i in range(30)]
    start = HybridPredictor(min_models=10)
    _fill_table(start, specs)
    start.fit_regressors()
    path = start.save(tmp_path / "pred.json")
    cache = LatencyCache(f"sqlite:///{tmp_path / 'store.db'}")
    sp = StudyPredictor(cache, path=path, refit_every=5, min_models=10, measure_kernels=False)
    assert not sp.predict_interval(specs[0]).known  # nothing measured yet: no interval
    for s in specs[:9]:
        cache.put(_result(s, _true_ms(s)))
        cache.put_genome(s)
    assert not sp.refresh() and sp.refits == 0  # 9 < min_models
    cache.put(_result(specs[9], _true_ms(specs[9])))
    cache.put_genome(specs[9])
    assert sp.refresh() and sp.refits == 1 and len(sp.predictor.rows) == 10
    assert sp.predict_interval(specs[20]).known
    for s in specs[10:14]:
        cache.put(_result(s, _true_ms(s)))
        cache.put_genome(s)
    assert not sp.refresh()  # 4 new < refit_every
    cache.put(_result(specs[14], _true_ms(specs[14])))
    cache.put_genome(specs[14])
    assert sp.refresh() and sp.refits == 2 and len(sp.predictor.rows) == 15
    assert len(HybridPredictor.load(path).rows) == 15  # saved after the refit
    # a predictor for another setting is refused with the difference named
    with pytest.raises(NasError, match="batch 1 .study: 4"):
        StudyPredictor(cache, path=path, batch=4)


# --- nas latency calibrate | predict --------------------------------------------------------
def test_predict_cli_shows_the_interval_and_held_out_error(synthetic, tmp_path, capsys):
    from nas.cli import main

    pred, test = synthetic
    path = pred.save(tmp_path / "p.json")
    g = tmp_path / "g.json"
    g.write_text(test[0].to_json())
    assert main(["latency", "predict", str(g), "--predictor", str(path)]) == 0
    out = capsys.readouterr().out
    iv = pred.predict_interval(test[0])
    assert f"predicted {iv.ms:.2f} ms (90% interval {iv.lo:.2f}-{iv.hi:.2f} ms)" in out
    rep = pred.fit_report
    assert (f"5-fold cross-validated on its 60 measurements: hybrid {rep['oof_within_10pct']:.0%} within 10% "
            f"(median {rep['oof_median_abs_err']:.1%})") in out
    assert main(["latency", "predict", str(g), "--predictor", str(path), "--json"]) == 0
    d = __import__("json").loads(capsys.readouterr().out)
    assert d["latency_ms"] == pytest.approx(iv.ms) and d["lo_ms"] == pytest.approx(iv.lo)
    assert d["predictor_version"] == PREDICTOR_VERSION


def test_calibrate_cli_reports_held_out_genomes(tmp_path, capsys):
    from nas.cli import main

    out_path = tmp_path / "p.json"
    assert main(["latency", "calibrate", "--models", "3", "--img-size", "32", "--holdout", "2", "--repeats", "3",
                 "--warmup", "1", "--out", str(out_path)]) == 0
    out = capsys.readouterr().out
    assert "no held-out error yet: 3 whole-model measurement(s); the correction needs 10" in out
    assert "held-out error on 2 genomes measured after the fit: hybrid" in out
    h = HybridPredictor.load(out_path).fit_report["holdout"]
    assert h["models"] == 2 and 0 <= h["within_10pct"] <= 1 and h["median_abs_err"] >= 0
    assert main(["latency", "calibrate", "--models", "3", "--holdout", "-1"]) == 2
