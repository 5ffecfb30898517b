"""Evaluating one trial, the same way for every backend.

``TrialEvaluator(study)`` turns a trial into a ``Candidate`` (suggest the genome, screen its
FLOPs/params without weights, measure latency if the study needs it, compare with the
constraints), and trains or scores a feasible candidate with the study's evaluator:

- ``proxy``: ``evaluators.ProxyTrainer`` on the study's data, per-epoch accuracy reported
  through a callback (Optuna pruning, Ray ASHA);
- ``zero_cost``: a zero-cost proxy score from ``evaluators.zero_cost`` (no training);
- ``synthetic``: a deterministic function of the genome and its FLOPs (tests, the sampler
  benchmark); it says nothing about real accuracy.

A candidate over budget is recorded with its constraint values and never trained; a genome
that was already trained in the study is not trained again (its result is reused).
``optuna_objective`` wires this into an Optuna objective.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas import attrs
from nas.errors import NasError
from nas.errors import one_line as _one_line
from nas.space import InvalidCandidate, SearchSpace, num_classes_for
from nas.store import weights_dir  # noqa: F401  (re-exported: where a study keeps weights)
from nas.study import StudySpec, format_count
from search_space.genome import ArchSpec


class TrialFailed(Exception):
    """A trial that could not produce a result (diverged, out of memory, timeout, error)."""


@dataclass
class Candidate:
    """One suggested genome with its cheap costs and its constraint values."""

    spec: ArchSpec
    costs: dict[str, Any]
    constraints: dict[str, float]            # name -> value - limit (<= 0: met)
    latency: dict[str, Any] | None = None

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    @property
    def arch_id(self) -> str:
        return self.spec.arch_id

    def attrs(self) -> dict[str, Any]:
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
        return out


@dataclass
class Outcome:
    """What the evaluator produced for a feasible candidate."""

    status: str                               # ok | stopped | failed
    accuracy: float | None
    attrs: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


OnEpoch = Callable[[int, float], bool]       # (epoch, val_acc) -> stop?


class TrialEvaluator:
    """Suggest, screen, constrain and evaluate candidates for one study (one per process)."""

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
                                                   subset=d.subset, seed=self.study.seed, download=False))
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

    def candidate_for(self, spec: ArchSpec) -> Candidate:
        costs = self.screen(spec)
        constraints: dict[str, float] = {}
        if "max_flops" in self.limits:
            constraints["max_flops"] = costs["flops"] - self.limits["max_flops"]
        if "max_params" in self.limits:
            constraints["max_params"] = costs["params"] - self.limits["max_params"]
        cand = Candidate(spec, costs, constraints)
        if self.study.needs_latency and cand.feasible:  # latency only for what passed the cheap checks
            cand.latency = self.latency(spec)
        if "max_latency_ms" in self.limits:
            lat = cand.latency["latency_ms"] if cand.latency else math.inf
            constraints["max_latency_ms"] = lat - self.limits["max_latency_ms"]
        return cand

    def suggest(self, trial: Any) -> Candidate:
        """Suggest a genome on ``trial``, screen it and record costs/constraints on the trial."""
        spec = self.space.suggest(trial)
        cand = self.candidate_for(spec)
        set_user_attrs(trial, {**cand.attrs(), attrs.CODE_VERSION: _code_version(), attrs.WORKER: _worker_id()})
        already = dict(getattr(trial, "constraints", None) or {})  # a heartbeat retry copies them
        for name, v in cand.constraints.items():
            # relative violation, so FLOPs and params weigh alike in the samplers' penalty
            limit = self.limits[name]
            if name not in already:
                trial.set_constraint(name, float(v / limit) if math.isfinite(v) else 1e6)
        return cand

    # --- evaluation ------------------------------------------------------------------------
    def evaluate(self, cand: Candidate, on_epoch: OnEpoch | None = None, seed: int | None = None) -> Outcome:
        kind = self.study.evaluator.kind
        if kind == "synthetic":
            return self._synthetic(cand, on_epoch)
        if kind == "zero_cost":
            return self._zero_cost(cand)
        if kind == "supernet":
            from nas.supernet import evaluate_supernet

            status, acc, out, reason = evaluate_supernet(self, cand, weights_dir(self.study))
            return Outcome(status, acc, out, reason)
        return self._proxy(cand, on_epoch, seed)

    def _proxy(self, cand: Candidate, on_epoch: OnEpoch | None, seed: int | None) -> Outcome:
        import torch

        from evaluators.proxy import ProxyConfig, ProxyTrainer
        from search_space import build_model

        ev = self.study.evaluator
        data = self.data()
        torch.manual_seed(_seed_for(cand.arch_id, self.study.seed))
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
        res = ProxyTrainer(cfg).fit(model, data, on_epoch=cb, flops_per_image=cand.costs["flops"])
        out = attrs.proxy_result_attrs(res)
        out[attrs.TRAIN_TIME_S] = res.wall_time_s
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

    def _synthetic(self, cand: Candidate, on_epoch: OnEpoch | None) -> Outcome:
        epochs = self.study.evaluator.epochs
        final = synthetic_accuracy(cand.spec, cand.costs["flops"])
        per_epoch = []
        for e in range(1, epochs + 1):
            acc = final * (1 - 0.5 ** (e + 1)) / (1 - 0.5 ** (epochs + 1))
            per_epoch.append(acc)
            if on_epoch is not None and on_epoch(e, acc):
                return Outcome("stopped", acc, {attrs.ACCURACY_PER_EPOCH: per_epoch, attrs.EPOCHS: e,
                                                attrs.EPOCH_BUDGET: epochs, attrs.ACCURACY: acc},
                               f"stopped after epoch {e}")
        return Outcome("ok", final, {attrs.ACCURACY_PER_EPOCH: per_epoch, attrs.EPOCHS: epochs,
                                     attrs.EPOCH_BUDGET: epochs, attrs.TRAIN_TIME_S: 0.0})

    # --- values ----------------------------------------------------------------------------
    def values(self, cand: Candidate, accuracy: float) -> list[float]:
        """The objective vector in the study's objective order."""
        out = []
        for o in self.study.objectives:
            if o.name == "accuracy":
                out.append(float(accuracy))
            elif o.name == "flops":
                out.append(float(cand.costs["flops"]))
            elif o.name == "params":
                out.append(float(cand.costs["params"]))
            else:
                lat = cand.latency["latency_ms"] if cand.latency else None
                if lat is None:
                    raise TrialFailed("latency was not measured")
                out.append(float(lat))
        return out

    def infeasible_message(self, cand: Candidate) -> str:
        parts = []
        for name, v in cand.constraints.items():
            if v > 0:
                limit = self.limits[name]
                val = v + limit
                fmt = (lambda x: f"{x:.3g} ms") if name == "max_latency_ms" else format_count
                parts.append(f"{name[4:]} {fmt(val)} > {fmt(limit)}")
        return "over budget: " + ", ".join(parts)


_CONV_LIKE = {"sepconv": 1.0, "pool": 0.6, "identity": 0.0}
_ATTN_LIKE = {"attention": 1.0, "window": 0.9, "sra": 0.85, "sra_linear": 0.8}


def synthetic_accuracy(spec: ArchSpec, flops: float) -> float:
    """A deterministic stand-in for accuracy, for tests and the sampler benchmark only.

    It has the structure NAS results report, so that a sampler that learns beats one that
    does not: accuracy saturates in FLOPs; convolution-like mixers pay off in early
    (high-resolution) stages and attention in late ones (CoAtNet, Dai et al. 2021); a conv stem
    helps (Xiao et al. 2021); attention needs a position encoding; plus a genome-hashed jitter.
    """
    n = len(spec.stages)
    fit = 0.0
    for i, s in enumerate(spec.stages):
        late = (i + 0.5) / n if n > 1 else 0.5  # 0: first (large grid) .. 1: last stage
        conv, attn = _CONV_LIKE.get(s.mixer, 0.5), _ATTN_LIKE.get(s.mixer, 0.0)
        stage = conv * (1 - late) + attn * late if (conv or attn) else 0.3
        if attn and s.pos == "none":
            stage -= 0.35
        fit += stage * s.depth
    fit /= max(1, sum(s.depth for s in spec.stages))
    stem = 0.04 if spec.stem.kind == "conv" else 0.0
    shape = 0.03 if n > 1 else 0.0
    jitter = (int(spec.arch_id[:8], 16) / 0xFFFFFFFF - 0.5) * 0.02
    acc = 0.30 + 0.30 * (1 - math.exp(-flops / 1.5e6)) + 0.28 * fit + stem + shape + jitter
    return float(min(1.0, max(0.0, acc)))


_LATENCY_CACHES: dict[str, Any] = {}




def save_trained_weights(study: StudySpec, spec: ArchSpec, model: Any) -> Path:
    """Write a trained model's state dict as ``<arch_id>.safetensors`` (one genome, one training)."""
    from nas.export.weights import save_weights  # shared tensors once, atomic

    folder = weights_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    return save_weights(model, folder / f"{spec.arch_id}.safetensors")


def measure_latency(spec: ArchSpec, setting: Any, storage_url: str | None = None) -> dict[str, Any]:
    """Latency of ``spec`` on ``setting.device`` at ``setting.batch``/``dtype`` through
    ``evaluators.latency``, cached in the study's own database (by arch_id, device, batch,
    dtype, image size, threads and torch version)."""
    from evaluators.latency import LatencyCache
    from evaluators.latency import measure_latency as measure

    cache = None
    if storage_url:
        if storage_url not in _LATENCY_CACHES:
            from nas.store import normalize_url

            _LATENCY_CACHES[storage_url] = LatencyCache(normalize_url(storage_url))
        cache = _LATENCY_CACHES[storage_url]
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

    torch.manual_seed(_seed_for(spec.arch_id, seed))
    model = build_model(spec)
    return float(zc.score(proxy, model, data, seed=seed))


def _seed_for(arch_id: str, seed: int) -> int:
    return (int(arch_id[:8], 16) + 1_000_003 * seed) % (2**31)


def _worker_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _code_version() -> str:
    from nas.store import code_version

    return code_version()


def one_line(e: BaseException) -> str:
    """A trial's failure in one line (``nas.errors.one_line``; a ``TrialFailed`` speaks for itself)."""
    return _one_line(e, plain=(TrialFailed,))


# --- Optuna objective ----------------------------------------------------------------------
REUSE_WAIT_S = 600.0


def find_reusable(study: Any, arch_id: str, number: int) -> Any | None:
    """A finished (COMPLETE or PRUNED) trial of ``study`` with this arch_id that was trained
    (not itself a reuse), other than trial ``number``; None if there is none."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        ua = t.user_attrs
        if t.number != number and ua.get(attrs.ARCH_ID) == arch_id and ua.get(attrs.FEASIBLE, True) \
                and attrs.REUSED_FROM not in ua \
                and (attrs.ACCURACY in ua or attrs.ZERO_COST in ua or t.state == TrialState.PRUNED):
            return t
    return None


def claim_or_wait(claims: Any, study: Any, arch_id: str, number: int, wait_s: float = REUSE_WAIT_S) -> Any | None:
    """Claim ``arch_id`` for trial ``number`` (None: this trial trains it) or wait for the trial
    that owns it and return that finished trial to reuse. A dead owner (stale or interrupted)
    is taken over; an owner that failed on its own fails this trial with the same reason."""
    from optuna.trial import TrialState

    name = study.study_name
    deadline = time.monotonic() + wait_s
    while True:
        owner = claims.claim(name, arch_id, number)
        if owner == number:
            return None
        t = _trial_by_number(study, owner)
        if t is None or t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return t
        if t.state == TrialState.FAIL:
            reason = t.user_attrs.get(attrs.FAILURE)
            if reason in (None, "interrupted"):
                if claims.take_over(name, arch_id, owner, number):
                    return None
                continue
            raise TrialFailed(f"same genome as failed trial {owner}: {reason}")
        if time.monotonic() > deadline:
            raise TrialFailed(f"gave up waiting for trial {owner}, which trains the same genome")
        time.sleep(0.5)


def _trial_by_number(study: Any, number: int) -> Any | None:
    trials = study.get_trials(deepcopy=False)
    if number < len(trials) and trials[number].number == number:
        return trials[number]
    return next((t for t in trials if t.number == number), None)


REUSED_KEYS = (attrs.ACCURACY, attrs.ACCURACY_PER_EPOCH, attrs.LOSS_PER_EPOCH, attrs.EPOCHS, attrs.EPOCH_BUDGET,
               attrs.ZERO_COST, attrs.DEVICE, attrs.LATENCY_MS, attrs.LATENCY_SPREAD_MS, attrs.LATENCY_DEVICE,
               attrs.LATENCY_SETTING)


def optuna_objective(te: TrialEvaluator, prune: bool = False, claims: Any = None) -> Callable[[Any], Any]:
    """The Optuna objective: suggest -> screen -> (infeasible: record, stop) -> reuse or evaluate.

    ``claims`` (``nas.store.ArchClaims``) makes "one genome, one training" hold across workers.

    Every failure leaves ``attrs.FAILURE`` on the trial; Ctrl-C leaves ``"interrupted"``.
    """
    import optuna

    def objective(trial: optuna.Trial) -> Any:
        try:
            try:
                cand = te.suggest(trial)
            except InvalidCandidate as e:
                raise TrialFailed(str(e)) from None
            if not cand.feasible:
                trial.set_user_attr(attrs.FAILURE, te.infeasible_message(cand))
                return _ret(te.values(cand, 0.0))
            if claims is not None:  # the claims table knows who trains which genome
                prior = claim_or_wait(claims, trial.study, cand.arch_id, trial.number)
            else:
                prior = find_reusable(trial.study, cand.arch_id, trial.number)
            if prior is not None:
                trial.set_user_attr(attrs.REUSED_FROM, prior.number)
                for k in REUSED_KEYS:
                    if k in prior.user_attrs:
                        trial.set_user_attr(k, prior.user_attrs[k])
                if prior.state == optuna.trial.TrialState.PRUNED:
                    trial.set_user_attr(attrs.FAILURE, f"pruned (as trial {prior.number})")
                    raise optuna.TrialPruned(f"same genome as pruned trial {prior.number}")
                return _ret(te.values(cand, _score_of(prior, te)))

            def on_epoch(epoch: int, acc: float) -> bool:
                if not prune:
                    return False
                trial.report(acc, epoch)
                return trial.should_prune()

            out = te.evaluate(cand, on_epoch=on_epoch)
            set_user_attrs(trial, out.attrs)
            if out.status == "stopped":
                trial.set_user_attr(attrs.FAILURE, f"pruned: {out.reason}")
                raise optuna.TrialPruned(out.reason)
            if out.status != "ok":
                raise TrialFailed(out.reason or "evaluation failed")
            if te.study.evaluator.kind != "zero_cost":  # a zero-cost score is not an accuracy
                trial.set_user_attr(attrs.ACCURACY, out.accuracy)
            return _ret(te.values(cand, out.accuracy))
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            _safe_set(trial, attrs.FAILURE, "interrupted")
            raise
        except Exception as e:
            _safe_set(trial, attrs.FAILURE, one_line(e))
            raise

    return objective


def set_user_attrs(trial: Any, values: dict[str, Any]) -> None:
    """Set several user attributes of an Optuna trial in one database transaction when the
    store is an ``RDBStorage`` (one commit instead of one per attribute), else one by one."""
    from nas.store import _jsonable

    values = {k: _jsonable(v) for k, v in values.items()}
    storage = getattr(getattr(trial, "study", None), "_storage", None)
    backend = getattr(storage, "_backend", storage)
    cached = getattr(trial, "_cached_frozen_trial", None)
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        if not isinstance(backend, RDBStorage) or cached is None:
            raise TypeError
        with _create_scoped_session(backend.scoped_session, True) as session:
            for k, v in values.items():
                backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial._trial_id, k, v)
        cached.user_attrs.update(values)
    except (TypeError, ImportError, AttributeError):
        for k, v in values.items():
            trial.set_user_attr(k, v)


def _score_of(prior: Any, te: TrialEvaluator) -> float:
    """The accuracy objective of a finished trial: its accuracy, or its zero-cost score."""
    ua = prior.user_attrs
    if attrs.ACCURACY in ua:
        return float(ua[attrs.ACCURACY])
    return float(ua[attrs.ZERO_COST][te.study.evaluator.zero_cost])


def _ret(values: list[float]) -> Any:
    return values[0] if len(values) == 1 else values


def _safe_set(trial: Any, key: str, value: Any) -> None:
    try:
        trial.set_user_attr(key, value)
    except Exception:
        pass
