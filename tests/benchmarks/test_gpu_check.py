"""``benchmarks/gpu_check.py`` on a machine without CUDA: one line and a JSON with the reason;
its latency section runs for real on the CPU (the same code path as on the GPU but for the
clock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402


def test_without_cuda_it_reports_the_reason_in_one_line_and_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check skipped: no CUDA device")
    assert "Traceback" not in proc.stderr
    doc = json.loads(out.read_text())
    s = doc["summary"]
    assert s["status"] == "skipped" and s["cuda_available"] is False
    assert s["reason"].startswith("no CUDA device: torch.cuda.is_available() is False") and torch.__version__ in s["reason"]
    assert doc["rows"] == [] and doc["machine"]["device"] == "cpu"


def test_no_cuda_reason_matches_this_machine():
    assert (gpu_check.no_cuda_reason() is None) == torch.cuda.is_available()


def test_latency_section_runs_on_cpu():
    r = gpu_check.latency_section("cpu", calib=3, genomes=2, img_size=32, batch=1, dtype="float32",
                                  repeats=3, warmup=1)
    assert len(r["rows"]) == 2 and r["clock"] == "wall"
    assert all(row["measured_ms"] > 0 and row["hybrid_ms"] > 0 for row in r["rows"])
    for key in ("within_10pct_share", "within_10pct_share_kernel_sum", "interval_coverage"):
        assert 0.0 <= r[key] <= 1.0
    errs = [abs(x["err_hybrid"]) for x in r["rows"]]
    assert r["median_abs_err"] == pytest.approx((errs[0] + errs[1]) / 2)  # the median of two
