"""Every use of Optuna's (and Ray Tune's ``OptunaSearch``'s) private API, in one module.

The rest of the project calls these functions only; ``tests/nas/test_optuna_internals.py``
exercises each of them against the installed Optuna and Ray, so an Optuna release that
renames or reshapes one fails there, loudly, with the name of what moved. The tested range
is pinned in ``pyproject.toml`` (``optuna>=5.0,<5.1``: ``Trial.set_constraint`` and the
per-name constraint attributes are new in Optuna 5.0).

What is used, and why:

- ``optuna.storages._rdb.storage._create_scoped_session`` and
  ``RDBStorage._set_trial_attr_without_commit`` with ``optuna.storages._rdb.models``: write
  all of a trial's user attributes in one transaction (one commit instead of one per
  attribute; a search writes about twenty per trial);
- ``Study._storage``, ``Trial._trial_id``, ``Trial._cached_frozen_trial``: the storage and
  the row behind a live trial, and the trial's cached copy (kept in step with what was written);
- ``FrozenTrial._trial_id``: the storage's row id of a finished trial;
- ``optuna.study._constrained_optimization._get_constraints_from_system_attrs``: decode the
  constraint values Optuna keeps as system attributes (old list format and 5.0's per-name keys);
- ``optuna.samplers.nsgaii._elite_population_selection_strategy._rank_population`` and
  ``_calc_crowding_distance``, ``_constrained_optimization._is_constrained_optimization``: NSGA-II's
  constrained non-dominated sorting and crowding distance, for the evolution sampler's selection;
- ``Study._storage.set_trial_system_attr`` with a ``FrozenTrial``'s row id: a sampler's per-trial
  state (the evolution sampler's plan), the way Optuna's own samplers keep theirs;
- Ray Tune's ``OptunaSearch._ot_trials`` / ``_ot_study`` / ``_completed_trials``: the Optuna
  trial behind a Ray trial id, telling it, and marking it told.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class OptunaInternalsChanged(RuntimeError):
    """The installed Optuna (or Ray) no longer has a private name this project relies on."""


def _missing(what: str, e: BaseException) -> OptunaInternalsChanged:
    import optuna

    return OptunaInternalsChanged(f"optuna {optuna.__version__}: {what} is gone or changed ({e}); "
                                  "nas.optuna_internals needs updating (tested range in pyproject.toml)")


# --- trials --------------------------------------------------------------------------------
def trial_id(trial: Any) -> int:
    """The storage's row id of an Optuna ``Trial`` or ``FrozenTrial``."""
    try:
        return int(trial._trial_id)
    except AttributeError as e:
        raise _missing("Trial._trial_id", e) from None


def trial_storage(trial: Any) -> Any:
    """The storage object behind a live ``optuna.Trial`` (the RDBStorage itself, not its cache)."""
    try:
        storage = trial.study._storage
    except AttributeError as e:
        raise _missing("Study._storage", e) from None
    return getattr(storage, "_backend", storage)  # a _CachedStorage wraps the RDBStorage


def set_user_attrs_batch(trial: Any, values: dict[str, Any]) -> bool:
    """Write ``values`` (JSON-ready) as user attributes of the live ``trial`` in one transaction.

    Returns False (writing nothing) when the trial's storage is not an ``RDBStorage``; the
    caller then writes them one by one through the public API. Raises
    ``OptunaInternalsChanged`` when the private names it needs are gone.
    """
    from optuna.storages import RDBStorage

    backend = trial_storage(trial)
    if not isinstance(backend, RDBStorage):
        return False
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        write = backend._set_trial_attr_without_commit
        cached = trial._cached_frozen_trial
        model = models.TrialUserAttributeModel
    except (ImportError, AttributeError) as e:
        raise _missing("the RDB storage's batched attribute write", e) from None
    tid = trial_id(trial)
    with _create_scoped_session(backend.scoped_session, True) as session:
        for k, v in values.items():
            write(session, model, tid, k, v)
    cached.user_attrs.update(values)
    return True


def constraints_from_system_attrs(system_attrs: dict[str, Any]) -> dict[str, float]:
    """The constraint values (name -> value; <= 0 is met) Optuna stores in a trial's system attrs."""
    try:
        from optuna.study._constrained_optimization import _get_constraints_from_system_attrs
    except ImportError as e:
        raise _missing("optuna.study._constrained_optimization._get_constraints_from_system_attrs", e) from None
    return _get_constraints_from_system_attrs(system_attrs)


def enqueued_params(trial: Any) -> dict[str, Any]:
    """The parameters ``Study.enqueue_trial`` fixed for ``trial`` (a ``FrozenTrial``; empty when
    it was not enqueued). Optuna keeps them in the system attribute ``fixed_params``."""
    fixed = trial.system_attrs.get("fixed_params")
    return dict(fixed) if isinstance(fixed, dict) else {}


def set_trial_system_attrs(study: Any, trial: Any, values: dict[str, Any]) -> None:
    """Write ``values`` as system attributes of ``trial`` (a ``FrozenTrial`` handed to a sampler's
    ``before_trial``) through the study's storage, as Optuna's own samplers keep per-trial state."""
    try:
        storage = study._storage
    except AttributeError as e:
        raise _missing("Study._storage", e) from None
    tid = trial_id(trial)
    for k, v in values.items():
        storage.set_trial_system_attr(tid, k, v)


def constrained_fronts(trials: list[Any], directions: list[Any]) -> list[list[Any]]:
    """NSGA-II's non-dominated fronts of finished ``trials`` (best first), with constraint
    domination when the trials carry constraint values (feasible first; among infeasible ones
    the smaller total violation)."""
    try:
        from optuna.samplers.nsgaii._elite_population_selection_strategy import _rank_population
        from optuna.study._constrained_optimization import _is_constrained_optimization
    except ImportError as e:
        raise _missing("optuna's NSGA-II ranking (_rank_population, _is_constrained_optimization)", e) from None
    return _rank_population(list(trials), list(directions), is_constrained=_is_constrained_optimization(trials))


def crowding_distance(front: list[Any]) -> dict[int, float]:
    """NSGA-II's crowding distance of each trial of one front, by trial number."""
    try:
        from optuna.samplers.nsgaii._elite_population_selection_strategy import (
            _calc_crowding_distance,
        )
    except ImportError as e:
        raise _missing("optuna's NSGA-II crowding distance (_calc_crowding_distance)", e) from None
    return _calc_crowding_distance(list(front))


# --- Ray Tune's OptunaSearch ---------------------------------------------------------------
def searcher_trial(searcher: Any, ray_trial_id: str) -> Any | None:
    """The Optuna trial ``OptunaSearch`` asked for Ray trial ``ray_trial_id`` (None if none)."""
    try:
        return searcher._ot_trials.get(ray_trial_id)
    except AttributeError as e:
        raise _missing("ray OptunaSearch._ot_trials", e) from None


def searcher_told(searcher: Any, ray_trial_id: str) -> bool:
    """Whether ``OptunaSearch`` already told the Optuna trial of ``ray_trial_id``."""
    try:
        return ray_trial_id in searcher._completed_trials
    except AttributeError as e:
        raise _missing("ray OptunaSearch._completed_trials", e) from None


def searcher_pending(searcher: Any) -> Iterator[tuple[str, Any]]:
    """``(ray trial id, Optuna trial)`` of every trial the searcher asked for and never told."""
    try:
        items = list(searcher._ot_trials.items())
    except AttributeError as e:
        raise _missing("ray OptunaSearch._ot_trials", e) from None
    for rid, ot in items:
        if not searcher_told(searcher, rid):
            yield rid, ot


def searcher_tell(searcher: Any, ray_trial_id: str, values: list[float] | None, state: Any) -> None:
    """Tell the searcher's study the result of ``ray_trial_id`` and mark it told."""
    try:
        study, done = searcher._ot_study, searcher._completed_trials
    except AttributeError as e:
        raise _missing("ray OptunaSearch._ot_study/_completed_trials", e) from None
    study.tell(searcher._ot_trials[ray_trial_id], values, state=state)
    done.add(ray_trial_id)
