"""Evaluating one candidate genome of a study, the same way for every backend.

``TrialEvaluator(study)`` turns a genome into a ``Candidate`` (screen its FLOPs/params
without weights, measure latency if the study needs it, compare with the constraints), and
trains or scores a feasible candidate with the study's evaluator:

- ``proxy``: ``evaluators.ProxyTrainer`` on the study's data, per-epoch accuracy reported
  through a callback (Optuna pruning, Ray ASHA);
- ``zero_cost``: a zero-cost proxy score from ``evaluators.zero_cost`` (no training);
- ``synthetic``: a deterministic function of the genome and its FLOPs (``nas.synthetic``;
  tests, the sampler benchmark); it says nothing about real accuracy.

The trial step that wires this into a search (claim/reuse, recording) is ``nas.trial``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nas import attrs
from nas.errors import NasError
from nas.space import SearchSpace, num_classes_for
from nas.study import StudySpec, data_cache_dir, format_count
from search_space.genome import ArchSpec


class TrialFailed(Exception):
    """A trial that could not produce a result (diverged, out of memory, timeout, error)."""


@dataclass
class Candidate:
    """One suggested genome with its cheap costs, its constraint values and its latency.

    ``costs``: ``flops`` (MACs), ``params`` and their per-stage lists; ``constraints``: name ->
    value - limit (<= 0: met), in the constraint's unit; ``latency``: ``latency_ms``,
    ``spread_ms``, ``device``, ``setting`` when measured.
    """

    spec: ArchSpec
    costs: dict[str, Any]
    constraints: dict[str, float]
    latency: dict[str, Any] | None = None
    resumes: int | None = None          # MO-ASHA: the paused trial this candidate's training continues

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    @property
    def arch_id(self) -> str:
        return self.spec.arch_id

    def attrs(self) -> dict[str, Any]:
        """The trial attributes (``nas.attrs`` names) the candidate fills before evaluation."""
        out = {
            attrs.GENOME: self.spec.to_json(),
            attrs.ARCH_ID: self.arch_id,
            attrs.SUMMARY: self.spec.summary(),
            attrs.FLOPS: int(self.costs["flops"]),
            attrs.PARAMS: int(self.costs["params"]),
            attrs.FLOPS_PER_STAGE: list(self.costs.get("flops_per_stage", [])),
            attrs.PARAMS_PER_STAGE: list(self.costs.get("params_per_stage", [])),
            attrs.FEASIBLE: self.feasible,
            attrs.CONSTRAINTS: dict(self.constraints),
        }
        if self.latency:
            out[attrs.LATENCY_MS] = self.latency["latency_ms"]
            out[attrs.LATENCY_SPREAD_MS] = self.latency.get("spread_ms")
            out[attrs.LATENCY_DEVICE] = self.latency.get("device")
            out[attrs.LATENCY_SETTING] = self.latency.get("setting")
            out[attrs.LATENCY_SOURCE] = self.latency.get("source", "measured")
            if self.latency.get("predictor_version") is not None:
                out[attrs.LATENCY_PREDICTOR_VERSION] = self.latency["predictor_version"]
                out[attrs.LATENCY_INTERVAL] = self.latency.get("interval")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (a Ray trial's config carries it from the driver to the trainable)."""
        return {"genome": self.spec.to_json(), "costs": dict(self.costs), "constraints": dict(self.constraints),
                "latency": dict(self.latency) if self.latency else None, "resumes": self.resumes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(ArchSpec.from_json(d["genome"]), dict(d["costs"]), dict(d["constraints"]), d.get("latency"),
                   d.get("resumes"))


@dataclass
class Outcome:
    """What the evaluator produced for a feasible candidate."""

    status: str                               # ok | stopped | paused | failed
    accuracy: float | None
    attrs: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    state: Any = field(default=None, repr=False)  # "paused": what ``evaluate(resume=...)`` continues from


OnEpoch = Callable[[int, float], bool]       # (epoch, 1-based; val_acc) -> stop?


class TrialEvaluator:
    """Screen, constrain and evaluate candidates for one study (one per process)."""

    def __init__(self, study: StudySpec, num_classes: int | None = None) -> None:
        self.study = study
        self._data = None
        self.num_classes = num_classes or num_classes_for(study.data)
        if self.num_classes is None:  # an ImageFolder: read it to know its classes
            self.num_classes = self.data().num_classes
        self.space = SearchSpace(study, num_classes=self.num_classes)
        self.limits = study.constraints.limits()

    # --- data ------------------------------------------------------------------------------
    def data(self) -> Any:
        """The study's dataset, loaded once per process (``NasError`` if its root is missing)."""
        if self._data is None:
            from evaluators.data import DataSpec as EvalDataSpec
            from evaluators.data import load_dataset

            d = self.study.data
            if d.dataset == "synthetic":
                raise NasError("dataset 'synthetic' has no images; use evaluator kind 'synthetic' with it")
            if d.root is not None:
                from pathlib import Path

                if not Path(d.root).expanduser().exists():
                    raise NasError(f"data root {d.root!r} does not exist (dataset {d.dataset!r})")
            self._data = load_dataset(EvalDataSpec(dataset=d.dataset, root=d.root, img_size=d.img_size,
                                                   subset=d.subset, seed=self.study.seed, download=False,
                                                   image_column=d.image_column, label_column=d.label_column),
                                      cache_dir=data_cache_dir(self.study), workers=d.decode_workers)
        return self._data

    # --- candidates ------------------------------------------------------------------------
    def screen(self, spec: ArchSpec) -> dict[str, Any]:
        """FLOPs (MACs) and params without real weights (``evaluators.screening``)."""
        from evaluators.screening import screen

        c = screen(spec)
        return {"flops": int(c.flops), "params": int(c.params), "flops_per_stage": list(c.flops_per_stage),
                "params_per_stage": list(c.params_per_stage)}

    def latency(self, spec: ArchSpec) -> dict[str, Any]:
        """Measured latency on the study's device and setting (``evaluators.latency``)."""
        return measure_latency(spec, self.study.latency, self.study.storage)

    def decided_latency(self, spec: ArchSpec) -> dict[str, Any]:
        """``[latency] predict = true``: the latency cap decided from the hybrid predictor's
        interval where it is sure, measured in the uncertain band (``decide_latency``); the
        predictor refits from the study's latency cache (``study_predictor``)."""
        from evaluators.latency_predictor import decide_latency, study_predictor
        from nas.weights import weights_dir

        lt = self.study.latency
        pred = study_predictor(latency_cache(self.study.storage), name=self.study.name,
                               store_dir=weights_dir(self.study).parent, device=lt.device, batch=lt.batch,
                               dtype=lt.dtype)
        box: dict[str, Any] = {}
        d = decide_latency(spec, self.limits["max_latency_ms"], pred,
                           lambda: box.setdefault("m", self.latency(spec))["latency_ms"],
                           need_value="latency_ms" in self.study.objective_names)
        p = pred.predictor
        threads = f" ({p.threads} threads)" if p.device == "cpu" else ""
        where = box.get("m") or {"device": f"{p.device}: {p.device_name}{threads}",
                                 "setting": {"batch": p.batch, "dtype": p.dtype, "img_size": spec.img_size}}
        return {**where, "latency_ms": d.latency_ms, "source": d.source, "predictor_version": d.predictor_version,
                "interval": None if d.lo is None else [d.lo, d.hi]}

    def candidate_for(self, spec: ArchSpec) -> Candidate:
        """Screen ``spec``, measure its latency when it passed the cheap caps and the study
        needs it, and compute its constraint values."""
        costs = self.screen(spec)
        constraints: dict[str, float] = {}
        if "max_flops" in self.limits:
            constraints["max_flops"] = costs["flops"] - self.limits["max_flops"]
        if "max_params" in self.limits:
            constraints["max_params"] = costs["params"] - self.limits["max_params"]
        cand = Candidate(spec, costs, constraints)
        if self.study.needs_latency and cand.feasible:  # latency only for what passed the cheap checks
            cand.latency = self.decided_latency(spec) if self.study.latency.predict else self.latency(spec)
        if "max_latency_ms" in self.limits:
            lat = cand.latency["latency_ms"] if cand.latency else math.inf
            constraints["max_latency_ms"] = lat - self.limits["max_latency_ms"]
        return cand

    def relative_constraints(self, cand: Candidate) -> dict[str, float]:
        """Constraint values relative to their limits (what the samplers read), so FLOPs and
        params weigh alike in the constrained samplers' penalty; an unmeasured one is 1e6."""
        return {name: float(v / self.limits[name]) if math.isfinite(v) else 1e6 for name, v in cand.constraints.items()}


    # --- evaluation ------------------------------------------------------------------------
    def evaluate(self, cand: Candidate, on_epoch: OnEpoch | None = None, seed: int | None = None, *,
                 resume: Any = None, pause_at: int | None = None) -> Outcome:
        """Score a feasible candidate. With ``pause_at`` (a 1-based epoch below the budget) a
        training evaluator stops there with status ``"paused"`` and ``Outcome.state``;
        ``resume=state`` continues such a run as if it had never stopped (``nas.fidelity``)."""
        kind = self.study.evaluator.kind
        if (resume is not None or pause_at is not None) and kind not in ("proxy", "synthetic"):
            raise NasError(f"evaluator kind {kind!r} cannot pause and resume training (mo_asha needs 'proxy')")
        if kind == "synthetic":
            return self._synthetic(cand, on_epoch, resume, pause_at)
        if kind == "zero_cost":
            return self._zero_cost(cand)
        if kind == "supernet":
            from nas.supernet import evaluate_supernet
            from nas.weights import weights_dir

            status, acc, out, reason = evaluate_supernet(self, cand, weights_dir(self.study))
            return Outcome(status, acc, out, reason)
        return self._proxy(cand, on_epoch, seed, resume, pause_at)

    def _proxy(self, cand: Candidate, on_epoch: OnEpoch | None, seed: int | None, resume: Any = None,
               pause_at: int | None = None) -> Outcome:
        import torch

        from evaluators.proxy import ProxyConfig, ProxyTrainer
        from nas.weights import save_trained_weights
        from search_space import build_model

        ev = self.study.evaluator
        data = self.data()
        torch.manual_seed(seed_for(cand.arch_id, self.study.seed))
        model = build_model(cand.spec)
        kw = dict(epochs=ev.epochs, batch_size=ev.batch_size, lr=ev.lr, weight_decay=ev.weight_decay,
                  time_limit_s=ev.time_limit_s, device=ev.device, seed=self.study.seed if seed is None else seed,
                  count_flops=False)
        kw.update(ev.recipe_dict)
        try:
            cfg = ProxyConfig(**kw)
        except TypeError as e:
            raise NasError(f"[evaluator.recipe]: {e}") from None
        cb = None
        if on_epoch is not None:
            def cb(epoch: int, acc: float, loss: float) -> bool:
                return bool(on_epoch(epoch, acc))
        res = ProxyTrainer(cfg).fit(model, data, on_epoch=cb, flops_per_image=cand.costs["flops"], resume=resume,
                                    pause_at=pause_at)
        out = attrs.proxy_result_attrs(res)
        out[attrs.TRAIN_TIME_S] = res.wall_time_s
        if res.status == "paused":
            out.pop(attrs.FAILURE, None)
            return Outcome("paused", res.accuracy, out, res.reason, state=res.state)
        if res.status == "ok":
            acc = res.accuracy
            if acc is None or not math.isfinite(acc):
                return Outcome("failed", None, out, "no validation accuracy")
            if ev.save_weights:
                out[attrs.WEIGHTS] = str(save_trained_weights(self.study, cand.spec, model))
            return Outcome("ok", float(acc), out)
        if res.status == "stopped":
            return Outcome("stopped", res.accuracy, out, res.reason)
        return Outcome("failed", res.accuracy, out, f"{res.status}: {res.reason}")

    def _zero_cost(self, cand: Candidate) -> Outcome:
        t = time.perf_counter()
        score = zero_cost_score(cand.spec, self.data(), self.study.evaluator.zero_cost, self.study.seed)
        if score is None or not math.isfinite(score):
            return Outcome("failed", None, {}, f"zero-cost proxy {self.study.evaluator.zero_cost!r} gave {score}")
        return Outcome("ok", float(score), {attrs.ZERO_COST: {self.study.evaluator.zero_cost: score},
                                            attrs.TRAIN_TIME_S: time.perf_counter() - t,
                                            attrs.EPOCHS: 0, attrs.EPOCH_BUDGET: 0})

    def _synthetic(self, cand: Candidate, on_epoch: OnEpoch | None, resume: Any = None,
                   pause_at: int | None = None) -> Outcome:
        from nas.synthetic import synthetic_accuracy, synthetic_curve

        epochs = self.study.evaluator.epochs
        final = synthetic_accuracy(cand.spec, cand.costs["flops"])
        curve = synthetic_curve(final, epochs)
        start = int(resume["epoch"]) if resume is not None else 0
        per_epoch: list[float] = list(curve[:start])
        for e, acc in enumerate(curve[start:], start=start + 1):
            per_epoch.append(acc)
            if pause_at is not None and e == pause_at and e < epochs:
                return Outcome("paused", acc, {attrs.ACCURACY_PER_EPOCH: per_epoch, attrs.EPOCHS: e,
                                               attrs.EPOCH_BUDGET: epochs, attrs.ACCURACY: acc, attrs.TRAIN_TIME_S: 0.0},
                               f"paused after epoch {e}", state={"epoch": e})
            if on_epoch is not None and on_epoch(e, acc):
                return Outcome("stopped", acc, {attrs.ACCURACY_PER_EPOCH: per_epoch, attrs.EPOCHS: e,
                                                attrs.EPOCH_BUDGET: epochs, attrs.ACCURACY: acc},
                               f"stopped after epoch {e}")
        return Outcome("ok", final, {attrs.ACCURACY_PER_EPOCH: per_epoch, attrs.EPOCHS: epochs,
                                     attrs.EPOCH_BUDGET: epochs, attrs.TRAIN_TIME_S: 0.0})

    # --- values ----------------------------------------------------------------------------
    def values(self, cand: Candidate, accuracy: float) -> list[float]:
        """The objective vector in the study's objective order.

        Raises:
            TrialFailed: latency is an objective and was not measured for this candidate.
        """
        return [self._value(cand, o.name, accuracy) for o in self.study.objectives]

    def infeasible_values(self, cand: Candidate) -> list[float]:
        """The objective vector of a candidate that failed its constraints and was never
        trained: accuracy 0 and, for a measurement the cheap screening made needless
        (latency), the worst value (+inf ms), so the trial stays off every front."""
        return [math.inf if o.name == "latency_ms" and not cand.latency else self._value(cand, o.name, 0.0)
                for o in self.study.objectives]

    @staticmethod
    def _value(cand: Candidate, name: str, accuracy: float) -> float:
        if name == "accuracy":
            return float(accuracy)
        if name in ("flops", "params"):
            return float(cand.costs[name])
        lat = cand.latency["latency_ms"] if cand.latency else None
        if lat is None:
            raise TrialFailed("latency was not measured")
        return float(lat)

    def infeasible_message(self, cand: Candidate) -> str:
        parts = []
        for name, v in cand.constraints.items():
            if v > 0:
                limit = self.limits[name]
                val = v + limit
                fmt = (lambda x: f"{x:.3g} ms") if name == "max_latency_ms" else format_count
                parts.append(f"{name[4:]} {fmt(val)} > {fmt(limit)}")
        return "over budget: " + ", ".join(parts)


_LATENCY_CACHES: dict[tuple[str, int], Any] = {}


def latency_cache(storage_url: str) -> Any:
    """The study store's ``LatencyCache`` (one per URL per process)."""
    import os

    from evaluators.latency import LatencyCache
    from nas.store import normalize_url

    key = (storage_url, os.getpid())
    if key not in _LATENCY_CACHES:
        _LATENCY_CACHES[key] = LatencyCache(normalize_url(storage_url))
    return _LATENCY_CACHES[key]


def measure_latency(spec: ArchSpec, setting: Any, storage_url: str | None = None) -> dict[str, Any]:
    """Latency of ``spec`` on ``setting.device`` at ``setting.batch``/``dtype`` through
    ``evaluators.latency``, cached in the study's own database (by arch_id, device, batch,
    dtype, image size, threads and torch version)."""
    from evaluators.latency import measure_latency as measure

    cache = latency_cache(storage_url) if storage_url else None
    r = measure(spec, device=setting.device, batch=setting.batch, dtype=setting.dtype, cache=cache)
    threads = f" ({r.threads} threads)" if r.device == "cpu" else ""
    return {"latency_ms": float(r.median_ms), "spread_ms": float(r.spread_ms),
            "device": f"{r.device}: {r.device_name}{threads}",
            "setting": {"batch": r.batch, "dtype": r.dtype, "img_size": r.img_size}}


def zero_cost_score(spec: ArchSpec, data: Any, proxy: str, seed: int) -> float | None:
    """One zero-cost proxy score of a freshly initialised ``spec`` on a batch of ``data``."""
    try:
        from evaluators import zero_cost as zc
    except ImportError:
        raise NasError("evaluator kind 'zero_cost' needs evaluators.zero_cost, which is not installed") from None
    import torch

    from search_space import build_model

    torch.manual_seed(seed_for(spec.arch_id, seed))
    model = build_model(spec)
    return float(zc.score(proxy, model, data, seed=seed))


def seed_for(arch_id: str, seed: int) -> int:
    """The torch seed of a genome's initialisation: the same genome, the same weights."""
    return (int(arch_id[:8], 16) + 1_000_003 * seed) % (2**31)
