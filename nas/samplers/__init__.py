"""Samplers, registered by name and chosen in the study file (``[study] sampler = "..."``).

Every sampler is an Optuna ``BaseSampler``, so the Optuna backend and Ray Tune's ``OptunaSearch``
use it alike on the same store, and every sampler reads its history from the store.

- ``evolution`` (the default): ``nas.samplers.evolution.EvolutionSampler``, a steady-state,
  constraint-aware evolutionary search on the genome itself (non-dominated sorting with
  crowding, constraint domination, tournament parents, genome mutation and stage crossover,
  random immigrants, optional preset warm start), with an online surrogate that ranks several
  candidate children and proposes the most promising (``nas.samplers.surrogate``).
- ``evolution_plain``: the same without the surrogate (one child per trial).
- ``random``, ``tpe``, ``nsga2``, ``gp``: Optuna's samplers.

Seeding (same seed + same history -> same proposals; a resumed or parallel worker never replays
a stream): every seeded draw of trial ``n`` comes from ``trial_seed(study_seed, n)``. Optuna's
samplers keep one random state per sampler object, so ``PerTrialSeeded`` gives each trial a
fresh Optuna sampler seeded that way; the evolution sampler seeds its own per-trial
``random.Random`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nas.study import DEFAULT_SAMPLER  # noqa: F401  (the study file's vocabulary, re-exported)
from nas.study import SAMPLERS as SAMPLER_NAMES

if TYPE_CHECKING:
    from nas.study import StudySpec


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s draws in a study seeded ``seed`` (NumPy's ``SeedSequence``:
    distinct, well-mixed 32-bit seeds for every (seed, number) pair)."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(number)]).generate_state(1)[0])


def _startup(n: int) -> int:
    return max(4, min(10, n // 3))


def _random(spec: StudySpec, n: int) -> Callable[[int], Any]:
    import optuna

    return lambda s: optuna.samplers.RandomSampler(seed=s)


def _tpe(spec: StudySpec, n: int) -> Callable[[int], Any]:
    import optuna

    return lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=_startup(n), multivariate=True,
                                                constant_liar=spec.workers > 1)


def _gp(spec: StudySpec, n: int) -> Callable[[int], Any]:
    import optuna

    return lambda s: optuna.samplers.GPSampler(seed=s, n_startup_trials=_startup(n), deterministic_objective=True,
                                               warn_independent_sampling=False)


def _nsga2(spec: StudySpec, n: int) -> Callable[[int], Any]:
    import optuna

    pop = max(4, min(50, n // 4))
    return lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=pop)


_OPTUNA: dict[str, Callable[[StudySpec, int], Callable[[int], Any]]] = {
    "random": _random, "tpe": _tpe, "gp": _gp, "nsga2": _nsga2,
}


def make_sampler(spec: StudySpec, worker: int = 0, target: int | None = None) -> Any:
    """The sampler ``spec`` names, seeded per trial from ``spec.seed`` (see the module docstring).

    ``worker`` is accepted for the backends' sake; trial numbers are unique across workers, so
    per-trial seeds already differ between them. ``target`` (default: the study's trials) sizes
    the start-up phase and the population.

    Raises:
        NasError: an unknown sampler name (the known ones are listed).
    """
    from nas.errors import NasError

    n = target or spec.trials or 50
    if spec.sampler in ("evolution", "evolution_plain"):
        from nas.samplers.evolution import EvolutionSampler

        return EvolutionSampler(spec, target=n, surrogate=spec.sampler == "evolution")
    if spec.sampler not in _OPTUNA:
        raise NasError(f"unknown sampler {spec.sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    from nas.samplers.seeding import PerTrialSeeded

    return PerTrialSeeded(_OPTUNA[spec.sampler](spec, n), spec.seed, name=spec.sampler)
