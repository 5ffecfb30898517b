"""Compatibility names: the trial path now lives in its own modules.

- ``nas.evaluator``: ``TrialEvaluator``, ``Candidate``, ``Outcome``, latency and zero-cost;
- ``nas.trial``: ``TrialStep`` (the backend-neutral step), ``TrialResult``, ``set_user_attrs``;
- ``nas.reuse``: claiming, waiting for and reusing the trial that trains the same genome;
- ``nas.synthetic``: the ``synthetic`` evaluator's landscape;
- ``nas.weights``: where proxy-trained weights are written;
- ``nas.backends.optuna_backend.optuna_objective``: the Optuna objective.
"""

from __future__ import annotations

from typing import Any

from nas.evaluator import (
    Candidate,
    OnEpoch,
    Outcome,
    TrialEvaluator,
    TrialFailed,
    measure_latency,
    seed_for,
    zero_cost_score,
)
from nas.reuse import REUSE_WAIT_S, REUSED_KEYS, claim_or_wait, find_reusable
from nas.space import InvalidCandidate
from nas.synthetic import synthetic_accuracy
from nas.trial import TrialResult, TrialStep, one_line, set_user_attrs
from nas.weights import save_trained_weights, weights_dir

__all__ = ["REUSED_KEYS", "REUSE_WAIT_S", "Candidate", "InvalidCandidate", "OnEpoch", "Outcome", "TrialEvaluator",
           "TrialFailed", "TrialResult", "TrialStep", "claim_or_wait", "find_reusable", "measure_latency",
           "one_line", "optuna_objective", "save_trained_weights", "seed_for", "set_user_attrs",
           "synthetic_accuracy", "weights_dir", "zero_cost_score"]


def optuna_objective(te: TrialEvaluator, prune: bool = False, claims: Any = None) -> Any:
    """The Optuna objective of ``te``'s study (``nas.backends.optuna_backend.optuna_objective``)."""
    from nas.backends.optuna_backend import optuna_objective as make

    return make(TrialStep(te, claims=claims), prune=prune)
