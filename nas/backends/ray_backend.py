"""The Ray Tune backend: ``Tuner`` + ``OptunaSearch(space=<define-by-run>, storage=<RDBStorage>,
study_name=...)``, so Ray's trials land in the same study store as the Optuna backend's.

- The define-by-run space function runs on the driver: it suggests the genome on the Optuna
  trial, screens it, sets the constraint values and the trial attributes, and claims the
  genome (``nas.store.ArchClaims``). It returns constants the trainable reads: the genome,
  its costs, and whether to train, to reuse another trial's result, or to stop at once (over
  budget).
- The trainable trains with the proxy recipe and reports accuracy after every epoch; ASHA
  (when the study names a pruner) stops weak trials early. The driver-side searcher writes each
  trial's per-epoch accuracies, epochs reached (``attrs.EPOCHS``) and budget
  (``attrs.EPOCH_BUDGET``) to the store, so an early-stopped trial is never taken for a
  full-budget one on the front.
- Resources per trial come from ``[ray]`` (``cpus_per_trial``, ``gpus_per_trial``, fractions
  allowed); ``--ray-address`` joins an existing cluster (else a local one is started).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nas import attrs
from nas.backends.common import SearchResult
from nas.study import StudySpec

_EVALUATORS: dict[str, Any] = {}


def _evaluator(spec: StudySpec) -> Any:
    """One ``TrialEvaluator`` per Ray worker process (the dataset is loaded once)."""
    from nas.objective import TrialEvaluator

    key = spec.to_json()
    if key not in _EVALUATORS:
        import torch

        torch.set_num_threads(spec.evaluator.threads)
        _EVALUATORS[key] = TrialEvaluator(spec)
    return _EVALUATORS[key]


def make_space(spec: StudySpec, te: Any, claims: Any) -> Any:
    """The define-by-run function ``OptunaSearch`` calls with an Optuna trial (on the driver)."""
    from nas.objective import InvalidCandidate, find_reusable

    def space(trial: Any) -> dict[str, Any]:
        try:
            cand = te.suggest(trial)
        except InvalidCandidate as e:
            trial.set_user_attr(attrs.FAILURE, str(e))
            return {"nas_action": "fail", "nas_reason": str(e)}
        const = {"nas_genome": cand.spec.to_json(), "nas_costs": {k: cand.costs[k] for k in ("flops", "params")},
                 "nas_number": trial.number}
        if cand.latency:
            const["nas_costs"]["latency_ms"] = cand.latency["latency_ms"]
        if not cand.feasible:
            trial.set_user_attr(attrs.FAILURE, te.infeasible_message(cand))
            return {**const, "nas_action": "infeasible"}
        study = trial.study
        prior = find_reusable(study, cand.arch_id, trial.number)
        owner = prior.number if prior is not None else claims.claim(study.study_name, cand.arch_id, trial.number)
        if owner != trial.number:
            trial.set_user_attr(attrs.REUSED_FROM, owner)
            return {**const, "nas_action": "reuse", "nas_owner": owner}
        return {**const, "nas_action": "train"}

    return space


def _metrics(spec: StudySpec, costs: dict[str, Any], acc: float, epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
    m = {"accuracy": float(acc), "epoch": int(epoch), **{k: float(v) for k, v in costs.items()},
         "nas_worker": _where()}
    m.update(extra)
    return m


def _where() -> str:
    """``ray:<node ip>:<node id prefix>:<pid>`` of the process running the trainable."""
    try:
        import ray

        ctx = ray.get_runtime_context()
        return f"ray:{ray.util.get_node_ip_address()}:{ctx.get_node_id()[:8]}:{os.getpid()}"
    except Exception:
        return f"pid:{os.getpid()}"


def make_trainable(spec: StudySpec, storage_url: str) -> Any:
    """The Ray function trainable: reports ``accuracy`` (and the cost objectives) per epoch."""

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        action = config.get("nas_action")
        costs = config.get("nas_costs", {})
        budget = spec.evaluator.epochs if spec.evaluator.kind != "zero_cost" else 0
        if action == "fail":
            tune.report({"accuracy": 0.0, "epoch": 0, "nas_worker": _where(),
                         "nas_failure": config.get("nas_reason", "invalid genome")})
            return
        if action == "infeasible":
            tune.report(_metrics(spec, costs, 0.0, budget, {"nas_infeasible": True}))
            return
        if action == "reuse":
            tune.report(_wait_for_owner(spec, storage_url, int(config["nas_owner"]), costs))
            return
        from nas.objective import Candidate
        from search_space.genome import ArchSpec

        te = _evaluator(spec)
        cand = Candidate(ArchSpec.from_json(config["nas_genome"]), dict(costs), {})
        per_epoch: list[float] = []
        t0 = time.perf_counter()

        def on_epoch(epoch: int, acc: float) -> bool:
            per_epoch.append(float(acc))
            tune.report(_metrics(spec, costs, acc, epoch, {"nas_per_epoch": list(per_epoch), "nas_budget": budget,
                                                           "nas_time_s": time.perf_counter() - t0}))
            return False

        try:
            out = te.evaluate(cand, on_epoch=on_epoch)
        except Exception as e:  # reported, not raised: the driver records the reason
            from nas.objective import one_line

            tune.report({"accuracy": 0.0, "epoch": len(per_epoch), "nas_worker": _where(), "nas_failure": one_line(e)})
            return
        if out.status != "ok":
            tune.report({"accuracy": 0.0, "epoch": len(per_epoch), "nas_worker": _where(),
                         "nas_failure": out.reason or "failed"})
        elif not per_epoch:  # zero-cost: one score, no epochs
            tune.report(_metrics(spec, costs, out.accuracy, 0, {"nas_per_epoch": [], "nas_budget": 0,
                                                                "nas_time_s": time.perf_counter() - t0}))

    return trainable


def _wait_for_owner(spec: StudySpec, storage_url: str, owner: int, costs: dict[str, Any],
                    wait_s: float = 600.0) -> dict[str, Any]:
    """Wait (in the worker) for the trial that trains this genome; return its metrics."""
    import optuna

    from nas.store import open_storage

    study = optuna.load_study(study_name=spec.name, storage=open_storage(storage_url, heartbeat_s=None))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        t = next((t for t in study.get_trials(deepcopy=False) if t.number == owner), None)
        if t is not None and t.state.is_finished():
            ua = t.user_attrs
            if t.state.name == "COMPLETE" and attrs.ACCURACY in ua:
                return _metrics(spec, costs, ua[attrs.ACCURACY], ua.get(attrs.EPOCHS, 0),
                                {"nas_per_epoch": ua.get(attrs.ACCURACY_PER_EPOCH, []),
                                 "nas_budget": ua.get(attrs.EPOCH_BUDGET, 0), "nas_time_s": 0.0})
            return {"accuracy": 0.0, "epoch": 0,
                    "nas_failure": f"same genome as trial {owner}, which ended {t.state.name}"}
        time.sleep(1.0)
    return {"accuracy": 0.0, "epoch": 0, "nas_failure": f"gave up waiting for trial {owner} (same genome)"}


def _searcher_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class NasOptunaSearch(OptunaSearch):
        """``OptunaSearch`` that writes the trial attributes (per-epoch accuracy, epochs reached
        and budget, failure reason) before telling the result, and records failures as FAILED."""

        def save(self, checkpoint_path: str) -> None:
            """No searcher checkpoint: the study store is the checkpoint (resume = run again)."""

        def restore(self, checkpoint_path: str) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None or trial_id in self._completed_trials:
                return super().on_trial_complete(trial_id, result, error)
            result = result or {}
            if result.get("nas_worker"):
                ot_trial.set_user_attr(attrs.WORKER, result["nas_worker"])
            failure = result.get("nas_failure")
            if error or failure:
                ot_trial.set_user_attr(attrs.FAILURE, failure or "the Ray trial raised (see the Ray logs)")
                self._ot_study.tell(ot_trial, state=_fail_state())
                self._completed_trials.add(trial_id)
                return
            if not result.get("nas_infeasible"):
                ot_trial.set_user_attr(attrs.ACCURACY, result.get("accuracy"))
                ot_trial.set_user_attr(attrs.ACCURACY_PER_EPOCH, result.get("nas_per_epoch", []))
                ot_trial.set_user_attr(attrs.EPOCHS, int(result.get("epoch", 0)))
                ot_trial.set_user_attr(attrs.EPOCH_BUDGET, int(result.get("nas_budget", 0)))
                ot_trial.set_user_attr(attrs.TRAIN_TIME_S, float(result.get("nas_time_s", 0.0)))
                if result.get("epoch", 0) < result.get("nas_budget", 0):
                    ot_trial.set_user_attr(attrs.FAILURE, f"stopped early by ASHA after {result.get('epoch')} "
                                                          f"of {result.get('nas_budget')} epochs")
            return super().on_trial_complete(trial_id, result, error)

    return NasOptunaSearch


def _fail_state() -> Any:
    from optuna.trial import TrialState

    return TrialState.FAIL


def run(spec: StudySpec, *, target: int | None, show_progress: bool = True, heartbeat_s: float | None = None,
        ray_init: dict[str, Any] | None = None) -> SearchResult:
    """Run ``spec``'s study on Ray Tune until it holds ``target`` counted trials."""
    import logging

    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from nas.backends.optuna_backend import counted_trials, make_sampler
    from nas.objective import TrialEvaluator
    from nas.progress import Progress
    from nas.store import ArchClaims, open_storage

    storage = open_storage(spec.storage, heartbeat_s=None)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    done = counted_trials(study)
    remaining = None if target is None else max(0, target - done)
    if remaining == 0:
        return SearchResult(spec.name, spec.storage, done, target)
    te = TrialEvaluator(spec)
    names = spec.objective_names
    modes = ["max" if d == "maximize" else "min" for d in spec.directions]
    searcher = _searcher_class()(
        space=make_space(spec, te, ArchClaims(storage)), metric=names if len(names) > 1 else names[0],
        mode=modes if len(modes) > 1 else modes[0], sampler=make_sampler(spec, 0, target), storage=storage,
        study_name=spec.name)
    f = spec.evaluator.fidelity
    if f.pruner != "none" and spec.evaluator.kind != "zero_cost":
        scheduler = ASHAScheduler(time_attr="epoch", metric="accuracy", mode="max", max_t=spec.evaluator.epochs,
                                  grace_period=f.min_epochs, reduction_factor=f.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    resources = {"cpu": spec.ray.cpus_per_trial, "gpu": spec.ray.gpus_per_trial}
    trainable = tune.with_resources(make_trainable(spec, spec.storage), resources)

    if not ray.is_initialized():
        kw = dict(ray_init or {})
        kw.setdefault("ignore_reinit_error", True)
        kw.setdefault("log_to_driver", False)
        kw.setdefault("logging_level", logging.WARNING)
        if spec.ray.address:
            kw["address"] = spec.ray.address
        else:
            kw.setdefault("include_dashboard", False)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        ray.init(**kw)
    runs = _runs_dir(spec)
    progress = Progress(target, initial=done, enabled=show_progress, desc=spec.name)

    class _ProgressCallback(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress.update(study)

        on_trial_error = on_trial_complete

    interrupted = False
    try:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining or -1,
                                        max_concurrent_trials=spec.ray.max_concurrent,
                                        time_budget_s=spec.timeout_s),
            run_config=tune.RunConfig(name=f"{spec.name}-{int(time.time())}", storage_path=str(runs), verbose=0,
                                      callbacks=[_ProgressCallback()]),
        )
        tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _fail_orphans(study, searcher)
        progress.update(study)
        progress.close()
    return SearchResult(spec.name, spec.storage, counted_trials(study), target, interrupted)


def _fail_orphans(study: Any, searcher: Any) -> None:
    """Trials this driver asked for but never told (interrupted, or Ray ended them): FAILED."""
    from optuna.trial import TrialState

    for trial_id, ot_trial in list(getattr(searcher, "_ot_trials", {}).items()):
        if trial_id in searcher._completed_trials:
            continue
        try:
            ot_trial.set_user_attr(attrs.FAILURE, "interrupted")
            study.tell(ot_trial, state=TrialState.FAIL)
        except Exception:
            pass


def _runs_dir(spec: StudySpec) -> Path:
    """Where Ray Tune keeps its experiment files: ``studies/runs/`` next to the study file."""
    if spec.path and Path(spec.path).is_file():
        d = Path(spec.path).resolve().parent / "runs"
    else:
        d = Path(tempfile.gettempdir()) / "nas-ray-runs"
    d.mkdir(parents=True, exist_ok=True)
    return d
