"""The trial step, one for every backend: suggest -> screen -> claim/reuse -> measure ->
evaluate -> record.

``TrialStep`` holds no backend logic; a backend adapts it thinly:

- ``start(trial)`` runs where the Optuna trial lives (the Optuna objective; Ray's
  define-by-run space function on the driver): suggest the genome, screen it, measure its
  latency when the study needs it (``nas.evaluator.TrialEvaluator.candidate_for``), record the
  candidate's attributes and constraint values on the trial. It returns the ``Candidate`` to
  evaluate, or the final ``TrialResult`` when there is nothing to train (an invalid genome; a
  candidate over budget, recorded COMPLETE and infeasible with its constraint values).
- ``finish(cand, number, study, report)`` runs where training runs (the same process for
  Optuna; a Ray worker): claim the genome or reuse the result of the trial that trained it
  (``nas.reuse``: a dead owner's genome is taken over), evaluate, and return the
  ``TrialResult``. ``report(epoch, accuracy, final) -> stop?`` is the backend's per-epoch hook
  (Optuna's pruner, Ray's ``tune.report``); epochs are 1-based, and a stop asked at the final
  epoch is ignored: a trial that trained its whole budget is a complete result.
- ``stopped(cand, partial, reason)`` turns a run stopped early from outside (Ray's ASHA)
  into the same result the Optuna path records for a pruned run.
- With MO-ASHA (``fidelity``, ``nas.fidelity``) ``finish`` trains through the rungs the
  candidate is promoted at; a candidate paused at a rung ends COMPLETE with the rung's values,
  and a continuation trial (``Candidate.resumes``) resumes a paused candidate's training
  instead of claiming its genome.

The backend then writes ``TrialResult.attrs`` to the trial and tells its state and values.
Ctrl-C is never caught here: the backend marks the trial ``"interrupted"``.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nas import attrs
from nas.errors import one_line as _one_line
from nas.evaluator import Candidate, TrialEvaluator, TrialFailed
from nas.reuse import REUSE_WAIT_S, claim_or_wait, find_reusable, reused_attrs, score_of
from nas.space import InvalidCandidate

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"   # Optuna's TrialState names
INTERRUPTED = "interrupted"                              # attrs.FAILURE of a trial stopped by Ctrl-C

Report = Callable[[int, float, bool], bool]              # (epoch 1-based, accuracy, final epoch?) -> stop?


@dataclass
class TrialResult:
    """How a trial ends: ``state`` (COMPLETE | PRUNED | FAIL), the objective ``values`` (in
    the study's objective order; None unless COMPLETE) and the user ``attrs`` to write (a
    FAIL or PRUNED result carries its one-line reason as ``attrs.FAILURE``)."""

    state: str
    values: list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        return self.attrs.get(attrs.FAILURE)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "values": self.values, "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        return cls(d["state"], d.get("values"), dict(d.get("attrs") or {}))


def failed(reason: str, extra: dict[str, Any] | None = None) -> TrialResult:
    return TrialResult(FAIL, None, {**(extra or {}), attrs.FAILURE: reason})


def one_line(e: BaseException) -> str:
    """A trial's failure in one line (``nas.errors.one_line``; a ``TrialFailed`` speaks for itself)."""
    return _one_line(e, plain=(TrialFailed,))


def worker_id() -> str:
    """``host:pid`` of this process (``attrs.WORKER``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def set_user_attrs(trial: Any, values: dict[str, Any]) -> None:
    """Set several user attributes of an Optuna trial, in one database transaction when the
    store is an ``RDBStorage`` (``nas.optuna_internals``), else one by one."""
    from nas.optuna_internals import OptunaInternalsChanged, set_user_attrs_batch
    from nas.store import jsonable

    values = {k: jsonable(v) for k, v in values.items()}
    try:
        if set_user_attrs_batch(trial, values):
            return
    except OptunaInternalsChanged:
        pass  # the public API still works; tests/nas/test_optuna_internals.py says what moved
    for k, v in values.items():
        trial.set_user_attr(k, v)


def record_candidate(trial: Any, cand: Candidate, te: TrialEvaluator) -> None:
    """Write a candidate's attributes and its (relative) constraint values on ``trial``."""
    from nas.store import code_version

    set_user_attrs(trial, {**cand.attrs(), attrs.CODE_VERSION: code_version(), attrs.WORKER: worker_id()})
    already = dict(getattr(trial, "constraints", None) or {})  # a heartbeat retry copies them
    for name, v in te.relative_constraints(cand).items():
        if name not in already:
            trial.set_constraint(name, v)


class TrialStep:
    """The backend-neutral trial step of one study in one process (see the module docstring).

    ``claims`` (``nas.store.ArchClaims``) makes "one genome, one training" hold across
    workers; without it a finished trial of the same genome is reused when there is one.
    ``wait_s`` bounds the wait for another trial training the same genome.
    """

    def __init__(self, te: TrialEvaluator, *, claims: Any = None, wait_s: float = REUSE_WAIT_S,
                 fidelity: Any = None) -> None:
        self.te = te
        self.claims = claims
        self.wait_s = wait_s
        self.fidelity = fidelity  # nas.fidelity.SuccessiveHalving when the study names mo_asha

    @property
    def budget(self) -> int:
        """Epochs of a full training (0 for a zero-cost score)."""
        return 0 if self.te.study.evaluator.kind == "zero_cost" else self.te.study.evaluator.epochs

    # --- where the Optuna trial lives --------------------------------------------------------
    def start(self, trial: Any) -> Candidate | TrialResult:
        """Suggest, screen, measure and record the candidate on ``trial`` (see the module)."""
        te = self.te
        try:
            spec = te.space.suggest(trial)
        except InvalidCandidate as e:
            return failed(str(e))
        try:
            cand = te.candidate_for(spec)
            resumes = (getattr(trial, "user_attrs", None) or {}).get(attrs.RESUMES)
            if resumes is not None:  # an MO-ASHA promotion (nas.fidelity): continue that trial's training
                cand.resumes = int(resumes)
            record_candidate(trial, cand, te)
            return cand if cand.feasible else self.infeasible(cand)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # screening or latency measurement failed
            return failed(one_line(e))

    def infeasible(self, cand: Candidate) -> TrialResult:
        """An over-budget candidate: COMPLETE, infeasible (its constraint values are recorded
        by ``start``), never trained; values that keep it off every front."""
        return TrialResult(COMPLETE, self.te.infeasible_values(cand), {attrs.FAILURE: self.te.infeasible_message(cand)})

    # --- where training runs -------------------------------------------------------------------
    def finish(self, cand: Candidate, number: int, study: Any, report: Report | None = None) -> TrialResult:
        """Claim or reuse, then evaluate ``cand`` for trial ``number`` of ``study``."""
        try:
            resume = None
            if cand.resumes is not None and self.fidelity is not None:
                resume = self.fidelity.resume_row({attrs.RESUMES: cand.resumes}, cand.arch_id)
                if resume is None:
                    return failed(f"trial {cand.resumes}'s paused training state is gone (continued elsewhere "
                                  f"or deleted); nothing to continue")
                return self.evaluate(cand, report, number=number, resume=resume)
            if self.claims is not None:  # the claims table knows who trains which genome
                prior = claim_or_wait(self.claims, study, cand.arch_id, number, self.wait_s)
            else:
                prior = find_reusable(study, cand.arch_id, number)
            if prior is not None:
                return self.reuse(cand, prior)
            return self.evaluate(cand, report, number=number)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # TrialFailed, NasError, anything the evaluator raised
            return failed(one_line(e))

    def reuse(self, cand: Candidate, prior: Any) -> TrialResult:
        """The result of ``prior``, a finished trial of the same genome."""
        a = reused_attrs(prior)
        if prior.state.name == PRUNED:
            return TrialResult(PRUNED, None, {**a, attrs.FAILURE: f"pruned (as trial {prior.number})"})
        return TrialResult(COMPLETE, self.te.values(cand, score_of(prior, self.te.study.evaluator.zero_cost)), a)

    def evaluate(self, cand: Candidate, report: Report | None = None, number: int | None = None,
                 resume: Any = None) -> TrialResult:
        """Train or score ``cand``; with MO-ASHA (``self.fidelity``) through the rungs it is
        promoted at, from ``resume`` (a waiting candidate's ``nas.fidelity.RungRow``) if given."""
        te, budget = self.te, self.budget
        if self.fidelity is not None and number is not None:
            out, extra = self.fidelity.train(te, cand, number, resume)
            a = {**out.attrs, **extra}
            if out.status in ("ok", "paused"):
                a.pop(attrs.FAILURE, None)
                a[attrs.ACCURACY] = out.accuracy
                return TrialResult(COMPLETE, te.values(cand, out.accuracy), a)
            return failed(out.reason or "evaluation failed", a)

        def on_epoch(epoch: int, acc: float) -> bool:
            if report is None:
                return False
            stop = bool(report(epoch, acc, epoch >= budget))
            return stop and epoch < budget  # a trial that trained its whole budget is complete

        out = te.evaluate(cand, on_epoch=on_epoch)
        a = dict(out.attrs)
        if out.status == "stopped":
            return self.stopped(cand, a, out.reason or "stopped")
        if out.status != "ok":
            return failed(out.reason or "evaluation failed", a)
        a.pop(attrs.FAILURE, None)
        if te.study.evaluator.kind != "zero_cost":  # a zero-cost score is not an accuracy
            a[attrs.ACCURACY] = out.accuracy
        return TrialResult(COMPLETE, te.values(cand, out.accuracy), a)

    def stopped(self, cand: Candidate, partial: dict[str, Any], reason: str) -> TrialResult:
        """A run stopped after ``partial[attrs.EPOCHS]`` epochs: PRUNED, or COMPLETE when it
        reached its budget (then its last accuracy is its result)."""
        a = dict(partial)
        epochs, budget = a.get(attrs.EPOCHS), a.get(attrs.EPOCH_BUDGET, self.budget)
        acc = a.get(attrs.ACCURACY)
        if epochs is not None and epochs >= budget and isinstance(acc, (int, float)) and math.isfinite(acc):
            a.pop(attrs.FAILURE, None)
            return TrialResult(COMPLETE, self.te.values(cand, float(acc)), a)
        a[attrs.FAILURE] = f"pruned: {reason}"
        return TrialResult(PRUNED, None, a)
