"""Selection for the evolutionary sampler: constrained non-dominated sorting with crowding
(Deb et al. 2002, NSGA-II), steady-state survival and binary tournaments.

The ranking and the crowding distance are Optuna's own (``optuna.samplers.nsgaii``): constraint
domination on the constraint values stored with ``trial.set_constraint`` (a feasible trial beats
an infeasible one; among infeasible ones the smaller total violation wins; feasible ones by
Pareto dominance). Optuna exposes them only in private modules, reached through
``nas.optuna_internals``; ``tests/nas/test_samplers.py`` pins their behaviour.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from nas import attrs
from nas.optuna_internals import constrained_fronts, crowding_distance


def fidelity_level(t: Any) -> float:
    """How far a trial's values can be trusted, for ranking: a full-budget result is ``inf``, a
    candidate waiting at an MO-ASHA rung (``nas.fidelity``) its rung's epochs, and an infeasible
    (never trained) one -1."""
    if t.user_attrs.get(attrs.FEASIBLE) is False:
        return -1.0
    rung = t.user_attrs.get(attrs.PAUSED_AT)
    return math.inf if rung is None else float(rung)


def rank_and_crowding(trials: Sequence[Any], directions: Sequence[Any]) -> dict[int, tuple[int, float]]:
    """Trial number -> (constrained non-domination rank, crowding distance within its front).

    ``trials`` are finished Optuna ``FrozenTrial`` objects with values (COMPLETE); rank 0 is the
    best front. Trials are ranked by ``fidelity_level`` first: every front of full-budget
    results comes before the fronts of candidates measured at a rung (higher rungs first), and
    those before the infeasible ones.
    """
    trials = sorted(trials, key=lambda t: t.number)
    out: dict[int, tuple[int, float]] = {}
    offset = 0
    for level in sorted({fidelity_level(t) for t in trials}, reverse=True):
        group = [t for t in trials if fidelity_level(t) == level]
        fronts = constrained_fronts(group, list(directions))
        for r, front in enumerate(fronts):
            dist = crowding_distance(list(front))
            for t in front:
                out[t.number] = (offset + r, dist[t.number])
        offset += len(fronts)
    return out


def survivors(trials: Sequence[Any], directions: Sequence[Any], size: int) -> list[Any]:
    """The ``size`` best of ``trials`` by rank, then crowding (NSGA-II's elitist truncation);
    returned in trial-number order. Deterministic for the same trials."""
    trials = sorted(trials, key=lambda t: t.number)
    if len(trials) <= size:
        return trials
    rc = rank_and_crowding(trials, directions)
    keep = sorted(trials, key=lambda t: (rc[t.number][0], -rc[t.number][1], t.number))[:size]
    return sorted(keep, key=lambda t: t.number)


def tournament(pool: Sequence[Any], rc: dict[int, tuple[int, float]], rng: random.Random, k: int = 2) -> Any:
    """Binary (``k``-ary) tournament: the lower rank wins, then the larger crowding distance."""
    entrants = [pool[rng.randrange(len(pool))] for _ in range(k)]
    return min(entrants, key=lambda t: (rc[t.number][0], -rc[t.number][1]))
