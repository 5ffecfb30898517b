"""The Optuna backend: one study in the RDB store, driven by one or several processes.

- Multi-objective studies use a constrained sampler (NSGA-II, TPE, GP read the constraint
  values each trial sets with ``trial.set_constraint``; ``random`` ignores them).
- A single-objective study (accuracy under hard caps) prunes on per-epoch accuracy with the
  pruner the study file names.
- ``workers > 1`` spawns that many processes on the same store; several ``nas search`` runs on
  one PostgreSQL study work the same way. Each trial takes a slot of the study's budget first
  (``nas.store.TrialSlots``), so the study ends at exactly ``trials`` counted trials
  (``nas.store.counted``), whoever ran them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from typing import Any

from nas.backends.common import SearchResult
from nas.study import StudySpec


def make_sampler(spec: StudySpec, worker: int = 0, target: int | None = None) -> Any:
    """The sampler the study file names: ``nas.samplers.make_sampler``."""
    from nas.samplers import make_sampler

    return make_sampler(spec, worker, target)


def make_pruner(spec: StudySpec) -> Any:
    """The study's Optuna pruner. Steps are 1-based epochs (``trial.report(acc, epoch)``), so
    ``min_epochs = k`` first prunes after epoch k: ``MedianPruner`` warms up for k steps
    (it prunes at ``step >= n_warmup_steps``), successive halving and Hyperband start their
    first rung at resource k (``step >= min_resource``). The final epoch is never pruned
    (``nas.trial.TrialStep``)."""
    import optuna

    f, ev = spec.evaluator.fidelity, spec.evaluator
    if f.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=f.min_epochs)
    if f.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=f.min_epochs, reduction_factor=f.reduction_factor)
    if f.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=f.min_epochs, max_resource=ev.epochs,
                                              reduction_factor=f.reduction_factor)
    return optuna.pruners.NopPruner()


def counted_trials(study: Any) -> int:
    from nas.store import counted

    return sum(counted(t) for t in study.get_trials(deepcopy=False))


def _report_failure(study: Any, trial: Any) -> None:
    """One line per failed trial (Optuna's own log of it, with a traceback, is silenced)."""
    if trial.state.name == "FAIL":
        from tqdm import tqdm

        from nas import attrs

        reason = trial.user_attrs.get(attrs.FAILURE, "unknown")
        if reason != "interrupted":
            tqdm.write(f"trial {trial.number} failed: {reason}", file=sys.stderr)


def optuna_objective(step: Any, prune: bool = False, on_start: Any = None) -> Any:
    """The Optuna objective: ``step`` (``nas.trial.TrialStep``) run on an Optuna trial.

    Writes the ``TrialResult``'s attributes, then returns its values (COMPLETE), raises
    ``optuna.TrialPruned`` (PRUNED) or ``TrialFailed`` (FAIL). With ``prune``, every epoch's
    accuracy is reported at step = epoch (1-based) and the study's pruner is asked. Ctrl-C
    leaves ``"interrupted"`` on the trial and propagates. ``on_start(trial)`` runs first.
    """
    import optuna

    from nas import attrs
    from nas.evaluator import TrialFailed
    from nas.trial import COMPLETE, INTERRUPTED, PRUNED, TrialResult, set_user_attrs

    def objective(trial: optuna.Trial) -> Any:
        def report(epoch: int, acc: float, final: bool) -> bool:
            trial.report(acc, epoch)
            return trial.should_prune()

        try:
            if on_start is not None:
                on_start(trial)
            res = step.start(trial)
            if not isinstance(res, TrialResult):
                res = step.finish(res, trial.number, trial.study, report if prune else None)
        except KeyboardInterrupt:
            _safe_set(trial, attrs.FAILURE, INTERRUPTED)
            raise
        set_user_attrs(trial, res.attrs)
        if res.state == COMPLETE:
            return res.values[0] if len(res.values) == 1 else res.values
        if res.state == PRUNED:
            raise optuna.TrialPruned(res.reason)
        raise TrialFailed(res.reason or "failed")

    return objective


def _safe_set(trial: Any, key: str, value: Any) -> None:
    try:
        trial.set_user_attr(key, value)
    except Exception:
        pass


def run_worker(spec: StudySpec, target: int | None, worker: int = 0, heartbeat_s: float | None = None,
               progress: Any = None, timeout_s: float | None = None) -> None:
    """Run trials of ``spec``'s study in this process until the study holds ``target`` counted
    trials or ``timeout_s`` passes.

    With a ``target``, each trial first takes a slot of the study's budget
    (``nas.store.TrialSlots``), shared by every worker on the store, so the study ends at
    exactly ``target`` counted trials however many workers run it.
    """
    import optuna
    import torch

    from nas.backends.common import fidelity_for
    from nas.evaluator import TrialEvaluator
    from nas.store import HEARTBEAT_S, ArchClaims, TrialSlots, open_storage
    from nas.trial import TrialStep, worker_id

    torch.set_num_threads(spec.evaluator.threads)
    storage = open_storage(spec.storage, heartbeat_s=heartbeat_s or HEARTBEAT_S)
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec, worker, target),
                              pruner=make_pruner(spec))
    fidelity = fidelity_for(spec, storage)
    if fidelity is not None:
        fidelity.enqueue_waiting()  # promotions a resumed study or a dead worker left undone
    step = TrialStep(TrialEvaluator(spec), claims=ArchClaims(storage), fidelity=fidelity)
    callbacks = [_report_failure]
    if progress is not None:
        callbacks.append(lambda s, t: progress.update(s))
    if target is None:  # a time budget only
        study.optimize(optuna_objective(step, prune=spec.prunes), timeout=timeout_s, catch=(Exception,),
                       callbacks=callbacks, gc_after_trial=False)
        return
    slots = TrialSlots(storage)
    held: dict[str, Any] = {}

    def bind(trial: Any) -> None:
        slots.bind(spec.name, held["ticket"], trial.number)
        held["bound"] = True

    objective = optuna_objective(step, prune=spec.prunes, on_start=bind)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        held.update(ticket=slots.take(study, target, worker_id()), bound=False)
        if held["ticket"] is None:
            return
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=False)
        finally:
            if not held["bound"]:  # no trial was asked: give the slot back (a bound one frees itself)
                slots.release(spec.name, held["ticket"])


def _worker_entry(spec: StudySpec, target: int | None, worker: int, heartbeat_s: float | None,
                  timeout_s: float | None) -> None:
    try:
        run_worker(spec, target, worker, heartbeat_s, None, timeout_s)
    except KeyboardInterrupt:
        os._exit(130)


def run(spec: StudySpec, *, target: int | None, show_progress: bool = True, heartbeat_s: float | None = None,
        initial: int = 0) -> SearchResult:
    """Run the search in this process (``workers == 1``) or in ``workers`` child processes."""
    import optuna

    from nas.progress import Progress
    from nas.store import open_storage

    progress = Progress(target, initial=initial, enabled=show_progress, desc=spec.name)
    interrupted = False
    try:
        if spec.workers <= 1:
            try:
                run_worker(spec, target, 0, heartbeat_s, progress, spec.timeout_s)
            except KeyboardInterrupt:
                interrupted = True
        else:
            interrupted = _run_processes(spec, target, heartbeat_s, progress)
    finally:
        storage = open_storage(spec.storage, heartbeat_s=None)
        study = optuna.load_study(study_name=spec.name, storage=storage)
        progress.update(study)
        progress.close()
    return SearchResult(spec.name, spec.storage, counted_trials(study), target, interrupted)


def _run_processes(spec: StudySpec, target: int | None, heartbeat_s: float | None, progress: Any) -> bool:
    import optuna

    from nas.store import open_storage

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, args=(spec, target, i, heartbeat_s, spec.timeout_s), daemon=False)
             for i in range(spec.workers)]
    for p in procs:
        p.start()
    storage = open_storage(spec.storage, heartbeat_s=None)
    study = optuna.load_study(study_name=spec.name, storage=storage)
    interrupted = False
    try:
        while any(p.is_alive() for p in procs):
            progress.update(study)
            time.sleep(2.0)
    except KeyboardInterrupt:
        interrupted = True
        for p in procs:  # they got the same SIGINT; give them time to mark their trial
            p.join(timeout=15)
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
                p.join(timeout=5)
    for p in procs:
        p.join()
    return interrupted
