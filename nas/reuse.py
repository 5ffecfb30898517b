"""One genome, one training: claiming a genome for a trial, waiting for its owner, reusing
the owner's result, and taking over a genome whose owner died.

``nas.store.ArchClaims`` is the table of who trains which genome; these functions give it
its protocol. Both backends go through them (``nas.trial.TrialStep``).
"""

from __future__ import annotations

import time
from typing import Any

from nas import attrs
from nas.evaluator import TrialFailed

REUSE_WAIT_S = 600.0      # how long a trial waits for the trial that trains the same genome

# what a trial that reuses another trial's result copies from it
# the training result only: a reusing trial keeps its own latency record (measured ones come from
# the same SQL cache, so they equal the owner's; a predicted one must stay with its interval and the
# constraint value computed from it)
REUSED_KEYS = (attrs.ACCURACY, attrs.ACCURACY_PER_EPOCH, attrs.LOSS_PER_EPOCH, attrs.EPOCHS, attrs.EPOCH_BUDGET,
               attrs.ZERO_COST, attrs.DEVICE, attrs.PAUSED_AT)


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


def claim_or_wait(claims: Any, study: Any, arch_id: str, number: int, wait_s: float = REUSE_WAIT_S,
                  poll_s: float = 0.5) -> Any | None:
    """Claim ``arch_id`` for trial ``number`` (None: this trial trains it) or wait for the trial
    that owns it and return that finished trial to reuse. A dead owner (failed without a
    reason, i.e. by heartbeat, or interrupted) is taken over; an owner that failed on its own
    fails this trial with the same reason (``TrialFailed``), as does waiting past ``wait_s``."""
    from optuna.trial import TrialState

    name = study.study_name
    deadline = time.monotonic() + wait_s
    while True:
        owner = claims.claim(name, arch_id, number)
        if owner == number:
            return None
        t = trial_by_number(study, owner)
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
        time.sleep(poll_s)


def trial_by_number(study: Any, number: int) -> Any | None:
    """The trial numbered ``number`` of ``study`` (None when there is none)."""
    trials = study.get_trials(deepcopy=False)
    if number < len(trials) and trials[number].number == number:
        return trials[number]
    return next((t for t in trials if t.number == number), None)


def score_of(prior: Any, zero_cost: str | None) -> float:
    """The accuracy objective of a finished trial: its accuracy, or its zero-cost score."""
    ua = prior.user_attrs
    if attrs.ACCURACY in ua:
        return float(ua[attrs.ACCURACY])
    return float(ua[attrs.ZERO_COST][zero_cost])


def reused_attrs(prior: Any) -> dict[str, Any]:
    """The attributes a trial copies from ``prior``, whose result it reuses."""
    out: dict[str, Any] = {attrs.REUSED_FROM: prior.number}
    for k in REUSED_KEYS:
        if k in prior.user_attrs:
            out[k] = prior.user_attrs[k]
    return out
