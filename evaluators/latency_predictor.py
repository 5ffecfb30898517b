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

Whole models still measure 0.8-1.6x their kernel sum on a CPU (a context effect: caches,
allocator, dispatch between kernels, which no per-kernel table captures), so ``HybridPredictor``
adds a learned correction, as in nn-Meter's follow-ups that learn from end-to-end measurements:

    latency = kernel_prediction * exp(g(x))

where ``g`` is a gradient-boosted regression (scikit-learn, Friedman 2001) of
``log(measured / kernel_prediction)`` on features of the decomposition (per-kind and per-mixer
time shares, kernel calls, tokens and widths per stage, MACs, activation elements, threads,
batch, image size, the share of the sum estimated by regression). Its uncertainty is a
cross-validated split-conformal interval (Vovk et al. 2005; Barber et al. 2021, "CV+"): the
``coverage`` quantile of the out-of-fold absolute log errors, so ``[lo, hi]`` holds the measured
latency for about ``coverage`` of unseen genomes. It refits from every whole-model measurement
of its device and setting (``refit``; ``LatencyCache.measurements`` reads them from a study's
SQL cache), and ``decide_latency`` uses the interval to decide a latency cap without measuring
when the cap lies outside it.

Both are stored as JSON (``save``/``load``), by default next to the study store
(``studies/latency_predictor_<device>.json``). The hybrid stores its training measurements (genome
and median ms), not a pickled model: ``load`` refits the correction deterministically.
"""

from __future__ import annotations

import dataclasses
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

MIN_LOG_HALFWIDTH = math.log1p(0.01)  # the narrowest interval: +-1% on the log scale
PREDICTOR_VERSION = 2
"""Version of the saved predictor format and of the prediction method; recorded with every
latency a search decides from a prediction. 1: kernel sum + linear overhead. 2: adds the
learned correction and its conformal interval (``HybridPredictor``)."""


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
        errs = [abs(LatencyPredictor.predict(self, s) / m - 1) for s, m in zip(specs, measured_ms, strict=True)]
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
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)  # atomic: several search workers may save the same predictor
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        """Read a predictor saved by ``save`` (``NasError`` when missing, unreadable or of
        another ``PREDICTOR_VERSION``)."""
        path = Path(path)
        if not path.exists():
            raise NasError(f"no latency predictor at {path}; build one with `nas latency calibrate`")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise NasError(f"{path} is not a latency predictor JSON file: {e}") from None
        if d.get("version") != PREDICTOR_VERSION:
            raise NasError(f"{path}: predictor version {d.get('version')} is not {PREDICTOR_VERSION}; recalibrate")
        return cls._from_dict(d)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> LatencyPredictor:
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



# --- the hybrid: kernel sum x learned correction -------------------------------------------
_KINDS = ("stem", "entry", "block", "head")
_MAX_STAGES = 4


def _mixer_names() -> list[str]:
    from operators import MIXERS

    return sorted(MIXERS.names())


@dataclass
class Interval:
    """A hybrid prediction (ms per batch) with its uncertainty.

    ``lo``/``hi`` bound the measured latency with about the predictor's ``coverage``
    probability (``0``/``inf`` when it has too few measurements to say); ``kernel_ms`` is the
    kernel-sum prediction it corrects; ``unseen`` counts kernels estimated by regression.
    """

    ms: float
    lo: float
    hi: float
    kernel_ms: float
    unseen: int

    @property
    def known(self) -> bool:
        """Whether the interval is finite (the correction has been fitted)."""
        return math.isfinite(self.hi) and self.lo > 0


class HybridPredictor(LatencyPredictor):
    """Kernel sum (``LatencyPredictor``) times a correction learned from whole-model measurements.

    Args:
        device, batch, dtype, threads, warmup, repeats, clock: as ``LatencyPredictor``; one
            predictor is one device and setting (the image size is a feature).
        coverage: probability that the measured latency falls in ``[lo, hi]`` (conformal).
        min_models: whole-model measurements needed before the correction is fitted; with fewer
            the interval is ``[0, inf]`` (nothing can be decided without measuring).

    ``add_measurement(spec, ms)`` records a measurement; ``refit()`` measures the missing
    kernels of the recorded genomes (optional), refits the kernel regressions, the overhead
    and the correction. ``fit_report`` says what was fitted, including the out-of-fold error
    of the correction and of the kernel sum alone.
    """

    def __init__(self, device: str = "cpu", batch: int = 1, dtype: str = "float32", threads: int = 1,
                 warmup: int = 3, repeats: int = 9, clock: str = "wall", coverage: float = 0.9,
                 min_models: int = 10) -> None:
        super().__init__(device, batch, dtype, threads, warmup, repeats, clock)
        if not 0 < coverage < 1:
            raise NasError(f"coverage must be in (0, 1), got {coverage}")
        self.coverage, self.min_models = float(coverage), int(min_models)
        self.rows: dict[str, dict[str, Any]] = {}  # arch_id -> {"genome": json, "ms": median}
        self._init_correction()

    def _init_correction(self) -> None:
        self._model: Any = None
        self._q = math.inf  # conformal half-width on the log scale
        self._mixers = _mixer_names()

    @property
    def version(self) -> int:
        return PREDICTOR_VERSION

    # --- data ------------------------------------------------------------------------------
    def add_measurement(self, spec: ArchSpec, ms: float) -> None:
        """Record one whole-model median latency (ms per batch) of ``spec`` at its ``img_size``."""
        if not (ms > 0 and math.isfinite(ms)):
            raise NasError(f"a latency measurement must be a positive number of ms, got {ms}")
        self.rows[spec.arch_id] = {"genome": spec.to_json(), "ms": float(ms)}

    def training_set(self) -> tuple[list[ArchSpec], list[float]]:
        """The recorded measurements as (genomes, ms), in arch_id order: the fit does not depend
        on the order they arrived in (a saved and reloaded predictor refits identically)."""
        rows = [self.rows[k] for k in sorted(self.rows)]
        return [ArchSpec.from_json(r["genome"]) for r in rows], [r["ms"] for r in rows]

    # --- features --------------------------------------------------------------------------
    def features(self, spec: ArchSpec, img_size: int | None = None) -> tuple[np.ndarray, Prediction]:
        """Feature vector of the correction, and the kernel prediction it corrects."""
        det = self.predict_detail(spec, img_size)
        kernels = arch_kernels(spec, img_size)
        by_kind = dict.fromkeys(_KINDS, 0.0)
        mixer_t = dict.fromkeys(self._mixers, 0.0)
        mixer_n = dict.fromkeys(self._mixers, 0.0)
        unseen_t = macs = acts = params = 0.0
        for k in kernels:
            row = self.table.get(kernel_id(k))
            t = row["ms"] if row is not None else self._estimate(k)
            f = row["features"] if row is not None else _features(k, self.batch)
            if row is None:
                unseen_t += k.count * t
            by_kind[k.kind] += k.count * t
            if k.kind == "block":
                m = dict(k.key[1:])["mixer"]
                if m in mixer_t:
                    mixer_t[m] += k.count * t
                    mixer_n[m] += k.count
            macs += k.count * f[0]
            acts += k.count * f[1]
            params += k.count * f[2]
        total = max(det.kernel_sum_ms, 1e-9)
        size = int(img_size or spec.img_size)
        grids = spec.replace(img_size=size).stage_grids() if size != spec.img_size else spec.stage_grids()
        tokens = [g[0] * g[1] for g in grids][:_MAX_STAGES]
        dims = [s.dim for s in spec.stages][:_MAX_STAGES]
        depths = [s.depth for s in spec.stages][:_MAX_STAGES]
        pad = _MAX_STAGES - len(tokens)
        x = [
            math.log(max(det.ms, 1e-6)), math.log(total), det.calls, len(kernels), len(spec.stages),
            sum(s.depth for s in spec.stages), unseen_t / total,
            math.log1p(macs), math.log1p(acts), math.log1p(params), math.log1p(macs) - math.log1p(acts),
            self.threads, self.batch, size,
            *[by_kind[k] / total for k in _KINDS],
            *[mixer_t[m] / total for m in self._mixers], *[mixer_n[m] for m in self._mixers],
            *[math.log1p(t) for t in tokens], *[0.0] * pad,
            *dims, *[0.0] * pad, *depths, *[0.0] * pad,
        ]
        return np.asarray(x, dtype=np.float64), det

    # --- fitting ---------------------------------------------------------------------------
    def refit(self, measure_kernels: bool = True) -> dict[str, Any]:
        """Refit on every recorded measurement: kernel regressions, overhead, correction.

        ``measure_kernels`` first measures the recorded genomes' kernels that are not in the
        table (on this machine: run it where the predictor predicts for). Returns ``fit_report``.
        """
        specs, ms = self.training_set()
        if measure_kernels:
            for s in specs:
                self.measure_kernels(s)
        if self.table:
            self.fit_regressors()
        if len(specs) >= 3 and self.table:
            self.fit_overhead(specs, ms)
        self._fit_correction(specs, ms)
        return self.fit_report

    def _gbm(self) -> Any:
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(loss="huber", n_estimators=250, max_depth=3, learning_rate=0.04,
                                         subsample=0.8, min_samples_leaf=3, random_state=0)

    def _fit_correction(self, specs: list[ArchSpec], ms: list[float]) -> None:
        self._init_correction()
        n = len(specs)
        report = dict(self.fit_report, correction_models=n, coverage=self.coverage, correction="none")
        if n < max(self.min_models, 5) or not self.table:
            report["reason"] = f"{n} whole-model measurement(s); the correction needs {max(self.min_models, 5)}"
            self.fit_report = report
            return
        feats = [self.features(s) for s in specs]
        X = np.stack([f for f, _ in feats])
        y = np.log(np.asarray(ms) / np.array([d.ms for _, d in feats]))
        from sklearn.model_selection import KFold

        oof = np.zeros(n)
        for tr, te in KFold(min(5, n), shuffle=True, random_state=0).split(X):
            oof[te] = self._gbm().fit(X[tr], y[tr]).predict(X[te])
        r_corr = np.abs(y - oof)
        r_kern = np.abs(y)  # the kernel sum alone predicts log ratio 0
        use = float(np.median(r_corr)) < float(np.median(r_kern))  # cross-validated choice
        r = r_corr if use else r_kern
        k = math.ceil((n + 1) * self.coverage)  # split-conformal rank (finite-sample valid)
        # never narrower than +-1%: a measured median is not known better than that (timer and
        # run-to-run noise), and a zero-width interval (residuals of 0, e.g. one-kernel models whose
        # kernel sum is the model) would decide caps on a tie
        self._q = max(float(np.sort(r)[k - 1]), MIN_LOG_HALFWIDTH) if k <= n else math.inf
        if use:
            self._model = self._gbm().fit(X, y)
        report.update(correction="gbm" if use else "none (the kernel sum was better out of fold)",
                      oof_median_abs_err=float(np.median(np.expm1(r_corr))),
                      oof_within_10pct=float(np.mean(np.exp(r_corr) - 1 <= 0.10)),
                      oof_median_abs_err_kernel_sum=float(np.median(np.expm1(r_kern))),
                      oof_within_10pct_kernel_sum=float(np.mean(np.exp(r_kern) - 1 <= 0.10)),
                      interval_log_halfwidth=self._q)
        report.pop("reason", None)
        self.fit_report = report

    # --- prediction ------------------------------------------------------------------------
    def predict_interval(self, spec: ArchSpec, img_size: int | None = None) -> Interval:
        """Hybrid prediction (ms per batch at ``self.batch``) with its conformal interval."""
        x, det = self.features(spec, img_size)
        g = float(self._model.predict(x[None])[0]) if self._model is not None else 0.0
        ms = det.ms * math.exp(g)
        if math.isfinite(self._q):
            lo, hi = ms * math.exp(-self._q), ms * math.exp(self._q)
        else:
            lo, hi = 0.0, math.inf
        return Interval(ms, lo, hi, det.ms, det.unseen)

    def predict(self, spec: ArchSpec, img_size: int | None = None) -> float:
        """Hybrid median latency in ms (batch ``self.batch``) of ``spec``."""
        return self.predict_interval(spec, img_size).ms

    def kernel_predict(self, spec: ArchSpec, img_size: int | None = None) -> float:
        """The kernel-sum prediction alone (``LatencyPredictor.predict``)."""
        return LatencyPredictor.predict(self, spec, img_size)

    @classmethod
    def calibrate(cls, specs: Iterable[ArchSpec], *, device: str = "cpu", batch: int = 1, dtype: str = "float32",
                  threads: int = 1, warmup: int = 3, repeats: int = 9, clock: str = "wall",
                  progress: Callable[[int, ArchSpec, float], None] | None = None,
                  coverage: float = 0.9, min_models: int = 10) -> HybridPredictor:
        """``LatencyPredictor.calibrate`` (kernels and models measured, interleaved per genome),
        then the correction fitted on the same whole-model measurements."""
        specs = list(specs)
        measured: list[float] = []

        def record(i: int, spec: ArchSpec, ms: float) -> None:
            measured.append(ms)
            if progress:
                progress(i, spec, ms)

        base = LatencyPredictor.calibrate(specs, device=device, batch=batch, dtype=dtype, threads=threads,
                                          warmup=warmup, repeats=repeats, clock=clock, progress=record)
        pred = cls._from_dict(dict(base.to_dict(), coverage=coverage, min_models=min_models))
        for s, m in zip(specs, measured, strict=True):
            pred.add_measurement(s, m)
        pred._fit_correction(*pred.training_set())
        return pred

    # --- storage ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dict(super().to_dict(), kind="hybrid", coverage=self.coverage, min_models=self.min_models,
                    measurements=self.rows)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> HybridPredictor:
        p = super()._from_dict(d)
        p.coverage, p.min_models = float(d.get("coverage", 0.9)), int(d.get("min_models", 10))
        p.rows = dict(d.get("measurements", {}))
        p._init_correction()
        if p.rows:  # the correction is data, not a pickle: refit it (deterministic)
            specs, ms = p.training_set()
            p._fit_correction(specs, ms)
        return p

    def to_setting(self) -> dict[str, Any]:
        """The device and setting this predictor is for, as ``measure_latency`` keys its
        results (CUDA: CUDA events and no thread count)."""
        cuda = self.device == "cuda"
        return dict(device=self.device, device_name=self.device_name, batch=self.batch, dtype=self.dtype,
                    threads=0 if cuda else self.threads, clock="cuda_events" if cuda else self.clock,
                    torch_version=self.torch_version)


class StudyPredictor:
    """A ``HybridPredictor`` kept up to date with the whole-model latencies a study measures.

    It reads ``cache.measurements(...)`` for its device and setting and refits when the first
    ``min_models`` are there, then whenever ``refit_every`` new ones have arrived, measuring
    the kernels of the measured genomes on the way (``HybridPredictor.refit``). Before predicting
    a candidate with a fitted correction it measures the candidate's kernels that are not in the
    table yet (nn-Meter's setting: kernels measured, the model predicted; a search revisits
    kernels, so most are looked up), keeping the features of the prediction like those it
    learned from.

    Args:
        cache: the study's ``LatencyCache``.
        device, batch, dtype, threads, clock: the setting the study measures latency at.
        path: the predictor's file: loaded if it exists (it must be for the same device and
            setting), saved after each refit.
        base: a calibrated predictor to start from while ``path`` does not exist yet (``nas
            latency calibrate``'s file); it is not written to.
    """

    def __init__(self, cache: Any, *, device: str = "cpu", batch: int = 1, dtype: str = "float32",
                 threads: int = 1, clock: str = "wall", path: str | Path | None = None,
                 base: str | Path | None = None, refit_every: int = 10, min_models: int = 10,
                 coverage: float = 0.9, measure_kernels: bool = True) -> None:
        self.cache, self.path = cache, Path(path) if path else None
        self.refit_every, self.measure_kernels = max(1, int(refit_every)), measure_kernels
        fresh = HybridPredictor(device, batch, dtype, threads, clock=clock, coverage=coverage, min_models=min_models)
        start = next((Path(q) for q in (path, base) if q and Path(q).exists()), None)
        if start is not None:
            loaded = HybridPredictor.load(start)
            want = {k: v for k, v in fresh.to_setting().items() if k != "torch_version"}
            got = {k: v for k, v in loaded.to_setting().items() if k != "torch_version"}
            if got != want:
                diff = ", ".join(f"{k} {got[k]!r} (study: {want[k]!r})" for k in want if got[k] != want[k])
                raise NasError(f"latency predictor {start} is for another setting: {diff}; "
                               f"recalibrate it for the study's setting or remove it")
            self.predictor = loaded
        else:
            self.predictor = fresh
        self._used = -1  # measurements the current fit used (-1: never refreshed)
        self.refits = 0

    @property
    def version(self) -> int:
        return self.predictor.version

    def refresh(self) -> bool:
        """Refit if enough new measurements are in the cache; returns whether it refitted."""
        rows = self.cache.measurements(**self.predictor.to_setting())
        least = self.predictor.min_models
        # refit once the correction can be fitted, then every refit_every new measurements; a
        # predictor loaded with measurements of its own learns the cache's at the first chance
        due = ((len(rows) >= least and (self._used < least or len(rows) - self._used >= self.refit_every))
               or (self._used < 0 and bool(self.predictor.rows) and bool(rows)))
        if not due:
            return False
        for spec, ms in rows:
            self.predictor.add_measurement(spec, ms)
        self.predictor.refit(measure_kernels=self.measure_kernels)
        self._used, self.refits = len(rows), self.refits + 1
        if self.path is not None:
            self.predictor.save(self.path)
        return True

    def predict_interval(self, spec: ArchSpec, img_size: int | None = None) -> Interval:
        self.refresh()
        if self.measure_kernels and math.isfinite(self.predictor._q):
            self.predictor.measure_kernels(spec if img_size is None else spec.replace(img_size=img_size))
        return self.predictor.predict_interval(spec, img_size)


def study_predictor(cache: Any, *, name: str, store_dir: str | Path, device: str = "cpu", batch: int = 1,
                    dtype: str = "float32", threads: int = 1, clock: str = "wall") -> StudyPredictor:
    """The ``StudyPredictor`` of study ``name``: its file is
    ``<store_dir>/<name>_latency_predictor_<device>.json``; it starts from the calibrated
    ``default_predictor_path(device, store_dir)`` when that exists, else from nothing (the
    first ``min_models`` candidates are then measured). One per process and study."""
    path = Path(store_dir) / f"{name}_latency_predictor_{device}.json"
    key = (str(path), getattr(cache, "url", None), device, batch, dtype, threads, clock)
    if key not in _STUDY_PREDICTORS:
        _STUDY_PREDICTORS[key] = StudyPredictor(cache, device=device, batch=batch, dtype=dtype, threads=threads,
                                                clock=clock, path=path,
                                                base=default_predictor_path(device, store_dir))
    return _STUDY_PREDICTORS[key]


_STUDY_PREDICTORS: dict[tuple, StudyPredictor] = {}


# --- deciding a latency cap -----------------------------------------------------------------
@dataclass(frozen=True)
class LatencyDecision:
    """How a candidate's latency was settled against a cap.

    ``latency_ms`` is the measured median when ``source == "measured"``, else the hybrid
    prediction; ``lo``/``hi`` the predictor's interval (``None`` when it could not predict);
    ``over_cap`` whether the candidate breaks the cap.
    """

    latency_ms: float
    source: str  # "predicted" | "measured"
    predictor_version: int | None  # None: no predictor was given
    over_cap: bool
    lo: float | None = None
    hi: float | None = None
    predicted_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decide_latency(spec: ArchSpec, cap_ms: float, predictor: Any, measure_fn: Callable[[], float], *,
                   need_value: bool = False, img_size: int | None = None) -> LatencyDecision:
    """Decide ``latency <= cap_ms`` from the predictor's interval when it can, else measure.

    A candidate whose interval lies wholly above the cap (``lo > cap``) is over it, and one
    whose interval lies wholly at or under it (``hi <= cap``) is under it, both without
    measuring; otherwise (the uncertain band, or a predictor that cannot predict yet)
    ``measure_fn()`` is called and its median ms decides. ``need_value=True`` (latency is also
    an objective) measures every candidate that is not clearly over the cap.

    Args:
        predictor: anything with ``predict_interval(spec, img_size) -> Interval`` and
            ``version`` (``HybridPredictor``, ``StudyPredictor``); ``None`` always measures.
        measure_fn: measures the whole model, returns its median ms.
    """
    iv = None
    if predictor is not None:
        try:
            iv = predictor.predict_interval(spec, img_size)
        except NasError:  # not calibrated yet (no kernels, no regression): measure
            iv = None
    version = None if predictor is None else int(getattr(predictor, "version", PREDICTOR_VERSION))
    if iv is not None and iv.known:
        bounds = dict(lo=iv.lo, hi=iv.hi, predicted_ms=iv.ms)
        if iv.lo > cap_ms:
            return LatencyDecision(iv.ms, "predicted", version, True, **bounds)
        if iv.hi <= cap_ms and not need_value:
            return LatencyDecision(iv.ms, "predicted", version, False, **bounds)
    else:
        bounds = dict(lo=None, hi=None, predicted_ms=iv.ms if iv is not None else None)
    ms = float(measure_fn())
    return LatencyDecision(ms, "measured", version, ms > cap_ms, **bounds)
