"""Kernel-level latency prediction for attention models.

nn-Meter (Zhang et al. 2021, "nn-Meter: towards accurate latency prediction of deep-learning
model inference on diverse edge devices") predicts a CNN's latency as the sum of the latencies
of its kernels measured on the device. Here the kernels are those of ``evaluators.kernels``: the
stem, each stage's entry (downsample + grid position encoding), one unified block per (mixer,
knobs, width, grid, block parity) signature, and the head. A model is predicted as

    latency = a * sum_k count_k * t_k + b * n_calls + c

where ``t_k`` is kernel k's median latency measured alone on the target device, ``n_calls`` the
number of kernel invocations and ``(a, b, c)`` a per-device overhead fitted by least squares on
full-model measurements (framework dispatch between kernels, cache effects). Kernels never
measured are estimated from a least-squares fit of latency on (MACs, activation elements,
parameters) per kernel kind and mixer, so a prediction never needs the device; measuring the
missing kernels first (``measure_kernels``) makes it exact-kernel.

The predictor is stored as JSON (``save``/``load``), by default next to the study store
(``studies/latency_predictor_<device>.json``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluators.kernels import Kernel, arch_kernels
from evaluators.latency import (
    _stats,
    device_name,
    measure_latency,
    measure_module,
    resolve_device,
    resolve_dtype,
)
from operators.errors import NasError
from search_space.genome import ArchSpec

PREDICTOR_VERSION = 1


def kernel_id(k: Kernel) -> str:
    """Stable id of a kernel signature (sha1 of its repr)."""
    return hashlib.sha1(repr(k.key).encode()).hexdigest()[:16]


def _group(k: Kernel) -> str:
    """Regression group: the kind, and for blocks the mixer."""
    return f"block:{dict(k.key[1:])['mixer']}" if k.kind == "block" else k.kind


def _features(k: Kernel, batch: int) -> list[float]:
    from evaluators.screening import kernel_cost

    c = kernel_cost(k)
    return [c.macs * batch / 1e6, math.prod(k.input_shape) * batch / 1e4, c.params / 1e4, 1.0]


@dataclass
class Prediction:
    """A predicted latency with its parts."""

    ms: float
    kernel_sum_ms: float
    calls: int
    unseen: int  # kernels estimated by regression (not measured)
    by_part: dict[str, float] = field(default_factory=dict)


class LatencyPredictor:
    """Predict a genome's latency from measured kernels plus a fitted overhead.

    Args:
        device, batch, dtype, threads, img_size: the configuration it predicts for (the
            kernels are measured at it; predictions for another ``img_size`` use other kernels).
    """

    def __init__(self, device: str = "cpu", batch: int = 1, dtype: str = "float32", threads: int = 1,
                 warmup: int = 3, repeats: int = 9, clock: str = "wall") -> None:
        self.device = resolve_device(device).type
        self.dtype = resolve_dtype(dtype)[0]
        self.batch, self.threads, self.warmup, self.repeats = int(batch), int(threads), int(warmup), int(repeats)
        self.clock = clock
        self.device_name = device_name(resolve_device(device))
        self.torch_version = torch.__version__
        self.table: dict[str, dict[str, Any]] = {}  # kernel id -> {ms, spread, group, features, label}
        self.overhead = (1.0, 0.0, 0.0)  # a, b, c
        self.regressors: dict[str, list[float]] = {}
        self.fit_report: dict[str, Any] = {}

    # --- kernels ---------------------------------------------------------------------------
    def measure_kernel(self, k: Kernel) -> float:
        """Median ms of kernel ``k`` on the device (measured once, then looked up)."""
        kid = kernel_id(k)
        if kid in self.table:
            return self.table[kid]["ms"]
        module = k.build()
        samples, _ = measure_module(module, k.input_shape, device=self.device, batch=self.batch, dtype=self.dtype,
                                    warmup=self.warmup, repeats=self.repeats, threads=self.threads,
                                    clock=self.clock)
        med, iqr, _, _ = _stats(samples)
        self.table[kid] = dict(ms=med, spread=iqr, group=_group(k), features=_features(k, self.batch), label=k.label)
        return med

    def measure_kernels(self, spec: ArchSpec) -> int:
        """Measure every kernel of ``spec`` not in the table yet; returns how many were new."""
        new = 0
        for k in arch_kernels(spec):
            if kernel_id(k) not in self.table:
                self.measure_kernel(k)
                new += 1
        return new

    def _estimate(self, k: Kernel) -> float:
        coef = self.regressors.get(_group(k)) or self.regressors.get(k.kind) or self.regressors.get("all")
        if coef is None:
            raise NasError("the latency predictor has no regression for unseen kernels; calibrate it first")
        return max(float(np.dot(coef, _features(k, self.batch))), 1e-3)

    # --- prediction ------------------------------------------------------------------------
    def predict_detail(self, spec: ArchSpec, img_size: int | None = None) -> Prediction:
        a, b, c = self.overhead
        total = 0.0
        calls = unseen = 0
        parts: dict[str, float] = {}
        for k in arch_kernels(spec, img_size):
            row = self.table.get(kernel_id(k))
            if row is None:
                t = self._estimate(k)
                unseen += 1
            else:
                t = row["ms"]
            total += k.count * t
            parts[k.part] = parts.get(k.part, 0.0) + a * k.count * t
            calls += k.count
        return Prediction(a * total + b * calls + c, total, calls, unseen, parts)

    def predict(self, spec: ArchSpec, img_size: int | None = None) -> float:
        """Predicted median latency in ms (batch ``self.batch``) of ``spec``."""
        return self.predict_detail(spec, img_size).ms

    # --- fitting ---------------------------------------------------------------------------
    def fit_regressors(self) -> None:
        """Least squares of kernel latency on (MACs, activation elements, params, 1) per group,
        per kind and over all kernels (fallbacks for groups with few samples)."""
        rows = list(self.table.values())
        groups: dict[str, list[dict]] = {"all": rows}
        for r in rows:
            groups.setdefault(r["group"], []).append(r)
            groups.setdefault(r["group"].split(":")[0], []).append(r)
        self.regressors = {}
        for g, rs in groups.items():
            if len(rs) < 4:
                continue
            X = np.array([r["features"] for r in rs])
            y = np.array([r["ms"] for r in rs])
            w = 1.0 / np.maximum(y, 1e-3)  # relative error matters: weight by 1 / latency
            coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
            self.regressors[g] = coef.tolist()

    def fit_overhead(self, specs: list[ArchSpec], measured_ms: list[float]) -> None:
        """Fit ``(a, b, c)`` on full-model measurements, minimising relative error."""
        a0 = self.overhead
        self.overhead = (1.0, 0.0, 0.0)
        preds = [self.predict_detail(s) for s in specs]
        self.overhead = a0
        X = np.array([[p.kernel_sum_ms, p.calls, 1.0] for p in preds])
        y = np.array(measured_ms)
        w = 1.0 / y
        coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
        if coef[0] <= 0:  # degenerate (too few or too noisy models): keep the plain sum
            coef = np.array([1.0, 0.0, 0.0])
        self.overhead = tuple(float(v) for v in coef)
        errs = [abs(self.predict(s) / m - 1) for s, m in zip(specs, measured_ms, strict=True)]
        self.fit_report = dict(models=len(specs), kernels=len(self.table), overhead=list(self.overhead),
                               fit_within_10pct=float(np.mean([e <= 0.10 for e in errs])),
                               fit_median_abs_err=float(np.median(errs)))

    @classmethod
    def calibrate(cls, specs: Iterable[ArchSpec], *, device: str = "cpu", batch: int = 1, dtype: str = "float32",
                  threads: int = 1, warmup: int = 3, repeats: int = 9, clock: str = "wall",
                  progress: Callable[[int, ArchSpec, float], None] | None = None) -> LatencyPredictor:
        """Measure the kernels of ``specs`` and the full models, then fit the overhead and the
        regressions for unseen kernels. Model and kernel measurements are interleaved per
        genome so load drift on a shared machine affects both alike."""
        pred = cls(device, batch, dtype, threads, warmup, repeats, clock)
        specs = list(specs)
        measured = []
        for i, spec in enumerate(specs):
            pred.measure_kernels(spec)
            r = measure_latency(spec, device=device, batch=batch, dtype=dtype, threads=threads,
                                warmup=warmup, repeats=repeats, clock=clock)
            measured.append(r.median_ms)
            if progress:
                progress(i, spec, r.median_ms)
        pred.fit_regressors()
        pred.fit_overhead(specs, measured)
        return pred

    # --- storage ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dict(version=PREDICTOR_VERSION, device=self.device, device_name=self.device_name, batch=self.batch,
                    dtype=self.dtype, threads=self.threads, clock=self.clock, torch_version=self.torch_version, warmup=self.warmup,
                    repeats=self.repeats, overhead=list(self.overhead), regressors=self.regressors,
                    fit_report=self.fit_report, kernels=self.table)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        path = Path(path)
        if not path.exists():
            raise NasError(f"no latency predictor at {path}; build one with `nas latency calibrate`")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise NasError(f"{path} is not a latency predictor JSON file: {e}") from None
        if d.get("version") != PREDICTOR_VERSION:
            raise NasError(f"{path}: predictor version {d.get('version')} is not {PREDICTOR_VERSION}; recalibrate")
        p = cls.__new__(cls)
        p.device, p.device_name, p.batch, p.dtype = d["device"], d["device_name"], d["batch"], d["dtype"]
        p.threads, p.torch_version, p.warmup, p.repeats = d["threads"], d["torch_version"], d["warmup"], d["repeats"]
        p.clock = d.get("clock", "wall")
        p.overhead = tuple(d["overhead"])
        p.regressors = d["regressors"]
        p.fit_report = d.get("fit_report", {})
        p.table = d["kernels"]
        return p


def default_predictor_path(device: str = "cpu", store_dir: str | Path = "studies") -> Path:
    return Path(store_dir) / f"latency_predictor_{device}.json"

