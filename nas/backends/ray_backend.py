"""The Ray Tune backend: ``Tuner`` + ``OptunaSearch(space=<define-by-run>, storage=<RDBStorage>,
study_name=...)``, so Ray's trials land in the same study store as the Optuna backend's.

It adapts the backend-neutral ``nas.trial.TrialStep`` and holds no trial logic of its own:

- the define-by-run space function (on the driver) is ``TrialStep.start``: suggest, screen,
  measure, record. Its constants carry the candidate to the trainable, or the final result
  when there is nothing to train (an over-budget or invalid candidate);
- the trainable (in a Ray worker) is ``TrialStep.finish``: claim or reuse (a dead owner's
  genome is taken over; the wait is the shared ``nas.reuse.REUSE_WAIT_S``), evaluate. Every
  epoch but the last is reported as it ends, so ASHA (when the study names a pruner) can stop
  weak trials; the last goes with the final result, so a trial that trained its whole budget
  is always a complete result;
- the searcher (on the driver) writes the ``TrialResult`` to the store and tells its state;
  a trial ASHA stopped is recorded PRUNED with its epochs reached (``TrialStep.stopped``),
  exactly as the Optuna backend records a pruned trial.
- Resources per trial come from ``[ray]`` (``cpus_per_trial``, ``gpus_per_trial``, fractions
  allowed); ``--ray-address`` joins an existing cluster (else a local one is started).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nas import attrs
from nas.backends.common import SearchResult
from nas.study import StudySpec

_STEPS: dict[tuple[str, int], Any] = {}


def _worker_step(spec: StudySpec) -> tuple[Any, Any]:
    """``(TrialStep, study)`` of ``spec`` in this Ray worker process: one evaluator (the
    dataset is loaded once), claims and study on the process's shared storage."""
    import optuna

    from nas.backends.common import fidelity_for
    from nas.evaluator import TrialEvaluator
    from nas.store import ArchClaims, open_storage
    from nas.trial import TrialStep

    key = (spec.to_json(), os.getpid())
    if key not in _STEPS:
        import torch

        torch.set_num_threads(spec.evaluator.threads)
        storage = open_storage(spec.storage, heartbeat_s=None)
        _STEPS[key] = (TrialStep(TrialEvaluator(spec), claims=ArchClaims(storage),
                                 fidelity=fidelity_for(spec, storage)),
                       optuna.load_study(study_name=spec.name, storage=storage))
    return _STEPS[key]


def make_space(step: Any, candidates: dict[int, Any]) -> Any:
    """The define-by-run function ``OptunaSearch`` calls with an Optuna trial (on the driver):
    ``TrialStep.start``. Its constants carry the candidate (or the final result, when there
    is nothing to train) to the trainable; ``candidates`` keeps them by trial number for the
    searcher."""
    from nas.trial import TrialResult

    def space(trial: Any) -> dict[str, Any]:
        res = step.start(trial)
        if isinstance(res, TrialResult):
            return {"nas_result": res.to_dict(), "nas_number": trial.number}
        candidates[trial.number] = res
        return {"nas_candidate": res.to_dict(), "nas_number": trial.number}

    return space


def _metrics(spec: StudySpec, values: list[float] | None, epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
    """What the trainable reports: every objective (0 when there is no value), the epoch (1-based)."""
    m = {name: float(v) for name, v in zip(spec.objective_names, values or [0.0] * len(spec.objective_names),
                                             strict=True)}
    m.setdefault("accuracy", 0.0)  # ASHA's metric
    m.update({"epoch": int(epoch), "nas_worker": _where()}, **extra)
    return m


def _where() -> str:
    """``ray:<node ip>:<node id prefix>:<pid>`` of the process running the trainable."""
    try:
        import ray

        ctx = ray.get_runtime_context()
        return f"ray:{ray.util.get_node_ip_address()}:{ctx.get_node_id()[:8]}:{os.getpid()}"
    except Exception:
        return f"pid:{os.getpid()}"


def make_trainable(spec: StudySpec) -> Any:
    """The Ray function trainable: ``TrialStep.finish`` in the worker. Every epoch but the last
    is reported as it ends (ASHA decides on them); the last goes with the final result."""

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        from nas.evaluator import Candidate

        final = config.get("nas_result")
        if final is None:
            step, study = _worker_step(spec)
            cand = Candidate.from_dict(config["nas_candidate"])
            per_epoch: list[float] = []

            def report(epoch: int, acc: float, last: bool) -> bool:
                per_epoch.append(float(acc))
                if not last:
                    partial = {attrs.ACCURACY_PER_EPOCH: list(per_epoch), attrs.EPOCHS: epoch,
                               attrs.EPOCH_BUDGET: step.budget, attrs.ACCURACY: float(acc)}
                    tune.report(_metrics(spec, step.te.values(cand, acc), epoch, {"nas_partial": json.dumps(partial)}))
                return False

            final = step.finish(cand, int(config["nas_number"]), study, report).to_dict()
        tune.report(_metrics(spec, final["values"], int(final["attrs"].get(attrs.EPOCHS) or 0),
                             {"nas_result": json.dumps(final)}))

    return trainable


def make_scheduler(spec: StudySpec) -> Any:
    """ASHA when the study names a pruner, else FIFO. Its time is the 1-based ``epoch`` the
    trainable reports, so ``grace_period = min_epochs`` first stops a trial after epoch
    ``min_epochs`` (a rung at epoch k holds trials that trained k epochs)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    f = spec.evaluator.fidelity
    if f.pruner not in ("none", "mo_asha") and spec.evaluator.kind != "zero_cost":  # mo_asha: nas.fidelity
        return ASHAScheduler(time_attr="epoch", metric="accuracy", mode="max", max_t=spec.evaluator.epochs,
                             grace_period=f.min_epochs, reduction_factor=f.reduction_factor)
    return FIFOScheduler()


def _searcher_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class NasOptunaSearch(OptunaSearch):
        """``OptunaSearch`` that records each trial's ``TrialResult`` (attributes, state,
        values) in the store; a trial ASHA stopped is recorded as ``TrialStep.stopped``."""

        def __init__(self, *args: Any, step: Any = None, candidates: dict[int, Any] | None = None,
                     **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.nas_step, self.nas_candidates = step, candidates if candidates is not None else {}

        def save(self, checkpoint_path: str) -> None:
            """No searcher checkpoint: the study store is the checkpoint (resume = run again)."""

        def restore(self, checkpoint_path: str) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            from nas.optuna_internals import searcher_tell, searcher_told, searcher_trial
            from nas.trial import COMPLETE, TrialResult, failed, set_user_attrs

            ot_trial = searcher_trial(self, trial_id)
            if ot_trial is None or searcher_told(self, trial_id):
                return super().on_trial_complete(trial_id, result, error)
            result = result or {}
            # Tune hands the searcher flattened results: the step's dicts travel as JSON strings
            if "nas_result" in result:
                res = TrialResult.from_dict(json.loads(result["nas_result"]))
            elif "nas_partial" in result and not error:  # stopped by the scheduler after an epoch
                partial = json.loads(result["nas_partial"])
                res = self.nas_step.stopped(self.nas_candidates[ot_trial.number], partial,
                                            f"stopped by ASHA after epoch {partial[attrs.EPOCHS]}")
            else:
                res = failed("the Ray trial raised (see the Ray logs)")
            self.nas_candidates.pop(ot_trial.number, None)
            extra = {attrs.WORKER: result["nas_worker"]} if result.get("nas_worker") else {}
            set_user_attrs(ot_trial, {**res.attrs, **extra})
            searcher_tell(self, trial_id, res.values if res.state == COMPLETE else None, _state(res.state))

    return NasOptunaSearch


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def run(spec: StudySpec, *, target: int | None, show_progress: bool = True, heartbeat_s: float | None = None,
        ray_init: dict[str, Any] | None = None) -> SearchResult:
    """Run ``spec``'s study on Ray Tune until it holds ``target`` counted trials."""
    import logging

    import optuna
    import ray
    from ray import tune

    from nas.backends.common import fidelity_for
    from nas.backends.optuna_backend import counted_trials, make_sampler
    from nas.evaluator import TrialEvaluator
    from nas.progress import Progress
    from nas.store import ArchClaims, open_storage
    from nas.trial import TrialStep

    storage = open_storage(spec.storage, heartbeat_s=None)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    done = counted_trials(study)
    remaining = None if target is None else max(0, target - done)
    if remaining == 0:
        return SearchResult(spec.name, spec.storage, done, target)
    step = TrialStep(TrialEvaluator(spec), claims=ArchClaims(storage))
    fidelity = fidelity_for(spec, storage)
    if fidelity is not None:
        fidelity.enqueue_waiting()  # promotions a resumed study or a dead worker left undone
    candidates: dict[int, Any] = {}
    names = spec.objective_names
    modes = ["max" if d == "maximize" else "min" for d in spec.directions]
    searcher = _searcher_class()(
        space=make_space(step, candidates), metric=names if len(names) > 1 else names[0],
        mode=modes if len(modes) > 1 else modes[0], sampler=make_sampler(spec, 0, target), storage=storage,
        study_name=spec.name, step=step, candidates=candidates)
    scheduler = make_scheduler(spec)
    resources = {"cpu": spec.ray.cpus_per_trial, "gpu": spec.ray.gpus_per_trial}
    trainable = tune.with_resources(make_trainable(spec), resources)

    if not ray.is_initialized():
        kw = dict(ray_init or {})
        kw.setdefault("ignore_reinit_error", True)
        kw.setdefault("log_to_driver", False)
        kw.setdefault("logging_level", logging.WARNING)
        if spec.ray.address:
            kw["address"] = spec.ray.address
        else:
            kw.setdefault("include_dashboard", False)
            # a new local cluster gets token authentication (Ray's default, the secure one) and Ray
            # warns that it chose it, every run: that one logger is kept to errors. (Setting
            # RAY_AUTH_MODE here instead is too late: ray has read its config at import.)
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        ray.init(**kw)
    # Ctrl-C raises KeyboardInterrupt here (as in the Optuna backend) instead of Tune's own
    # graceful stop, so in-flight trials are marked "interrupted" and the exit code says so
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    runs = _runs_dir(spec)
    progress = Progress(target, initial=done, enabled=show_progress, desc=spec.name)

    class _ProgressCallback(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress.update(study)

        on_trial_error = on_trial_complete

    # Tune's automatic loggers are off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS) but the JSON one is
    # kept: fit() ends by reading each trial's result.json into its ResultGrid, and without it
    # prints "FileNotFoundError: Could not fetch metrics" once per trial after a good run
    from ray.tune.logger import JsonLoggerCallback

    interrupted = False
    try:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining or -1,
                                        max_concurrent_trials=spec.ray.max_concurrent,
                                        time_budget_s=spec.timeout_s),
            run_config=tune.RunConfig(name=f"{spec.name}-{int(time.time())}", storage_path=str(runs), verbose=0,
                                      callbacks=[_ProgressCallback(), JsonLoggerCallback()]),
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
    """Trials this driver asked for but never told (interrupted, or Ray ended them): FAILED
    with ``"interrupted"``, as the Optuna backend leaves them."""
    from optuna.trial import TrialState

    from nas.optuna_internals import searcher_pending
    from nas.trial import INTERRUPTED

    for _rid, ot_trial in list(searcher_pending(searcher)):
        try:
            ot_trial.set_user_attr(attrs.FAILURE, INTERRUPTED)
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
