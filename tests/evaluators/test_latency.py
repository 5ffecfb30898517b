"""Latency measurement, its SQL cache (SQLite and PostgreSQL), the predictor, training memory."""

from __future__ import annotations

import json
import uuid

import pytest
import torch
from torch import nn

from evaluators import (
    LatencyCache,
    LatencyPredictor,
    LatencyResult,
    measure_latency,
    training_memory,
)
from evaluators.latency import cpu_name, measure_parts, resolve_device
from evaluators.memory import saved_activation_bytes
from nas.errors import NasError
from search_space import PRESETS, build_model

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SMALL = PRESETS["pvt_v2_b0"].replace(img_size=64, num_classes=10)


def test_measurement_records_its_conditions():
    threads_before = torch.get_num_threads()
    r = measure_latency(SMALL, device="cpu", batch=2, warmup=1, repeats=5, threads=1)
    assert isinstance(r, LatencyResult)
    assert r.median_ms > 0 and r.spread_ms >= 0 and len(r.samples_ms) == 5
    assert min(r.samples_ms) <= r.median_ms <= max(r.samples_ms)
    assert (r.device, r.batch, r.dtype, r.img_size, r.threads) == ("cpu", 2, "float32", 64, 1)
    assert r.device_name == cpu_name() and r.torch_version == torch.__version__
    assert r.arch_id == SMALL.arch_id and not r.cached
    assert torch.get_num_threads() == threads_before  # the fixed thread count is restored


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(NasError, match="no CUDA GPU"):
        measure_latency(SMALL, device="cuda")
    with pytest.raises(NasError, match="cpu or cuda"):
        resolve_device("tpu")


def _cache_roundtrip(url: str, table: str) -> None:
    cache = LatencyCache(url, table=table)
    try:
        first = measure_latency(SMALL, warmup=1, repeats=3, cache=cache)
        assert not first.cached and len(cache) == 1 and cache.misses == 1
        again = measure_latency(SMALL, warmup=1, repeats=3, cache=cache)
        assert again.cached and cache.hits == 1
        assert again.median_ms == first.median_ms and again.samples_ms == first.samples_ms
        # another configuration is another key: measured, not served
        other = measure_latency(SMALL, warmup=1, repeats=3, batch=2, cache=cache)
        assert not other.cached and len(cache) == 2
        # a second cache object on the same table (another worker) sees the rows
        assert LatencyCache(url, table=table).get(**{k: getattr(first, k) for k in LatencyCache._KEY}) is not None
    finally:
        cache.drop()


def test_cache_sqlite(tmp_path):
    _cache_roundtrip(f"sqlite:///{tmp_path / 'store.db'}", "latency")


def test_cache_postgresql():
    try:
        cache = LatencyCache(PG_URL, table=f"test_{uuid.uuid4().hex[:10]}_latency")
    except NasError as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    cache.drop()
    _cache_roundtrip(PG_URL, f"test_{uuid.uuid4().hex[:10]}_latency")


def test_measure_parts_times_each_stage():
    model = build_model(SMALL)
    parts = measure_parts(model, (3, 64, 64), ["stem", "stages.0", "stages.3", "head"], warmup=1, repeats=3)
    assert set(parts) == {"stem", "stages.0", "stages.3", "head"} and all(v > 0 for v in parts.values())


def test_predictor_sums_kernels_and_roundtrips(tmp_path):
    specs = [PRESETS[n].replace(img_size=64, num_classes=10) for n in ("pvt_v2_b0", "poolformer_s12", "deit_tiny")]
    pred = LatencyPredictor.calibrate(specs, warmup=1, repeats=3)
    assert pred.fit_report["models"] == 3 and pred.fit_report["kernels"] == len(pred.table) >= 10
    d = pred.predict_detail(specs[0])
    assert d.unseen == 0 and d.ms > 0
    a, b, c = pred.overhead
    assert d.ms == pytest.approx(a * d.kernel_sum_ms + b * d.calls + c)
    path = pred.save(tmp_path / "p.json")
    back = LatencyPredictor.load(path)
    assert back.predict(specs[1]) == pytest.approx(pred.predict(specs[1]))
    assert json.loads(path.read_text())["device_name"] == cpu_name()
    # a genome with kernels never measured is still predicted (regression), and says so
    new = PRESETS["caformer_s18"].replace(img_size=64, num_classes=10)
    nd = pred.predict_detail(new)
    assert nd.unseen > 0 and nd.ms > 0
    with pytest.raises(NasError, match="calibrate"):
        LatencyPredictor.load(tmp_path / "missing.json")


class _TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_saved_activation_bytes_by_hand():
    m = _TwoLinear()
    acts, out = saved_activation_bytes(m, torch.randn(5, 8))
    # a saves its input (5x8); relu saves its output (5x32), which b also saves (same storage)
    assert acts == (5 * 8 + 5 * 32) * 4
    assert out == 5 * 4 * 4


def test_training_memory_estimate():
    small = training_memory(SMALL, 2)
    big = training_memory(SMALL, 8)
    n_params = sum(p.numel() for p in build_model(SMALL).parameters())
    assert small.weights_bytes == n_params * 4 and small.optimizer_bytes == 2 * small.weights_bytes
    assert big.activations_bytes > 3 * small.activations_bytes  # activations scale with the batch
    assert big.peak_bytes > small.peak_bytes > 4 * small.weights_bytes
    # the meta-device estimate of the genome matches running the real model (math attention aside)
    real = training_memory(build_model(PRESETS["poolformer_s12"].replace(img_size=64, num_classes=10)), 2,
                           img_size=64)
    meta = training_memory(PRESETS["poolformer_s12"].replace(img_size=64, num_classes=10), 2)
    assert meta.peak_bytes == pytest.approx(real.peak_bytes, rel=0.05)
    if not torch.cuda.is_available():
        with pytest.raises(NasError, match="no CUDA GPU"):
            training_memory(SMALL, 2, device="cuda")
