"""Per-trial seeding of Optuna's samplers (issue 13.7): see ``nas.samplers``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.samplers import BaseSampler

from nas.samplers import trial_seed


class PerTrialSeeded(BaseSampler):
    """An Optuna sampler whose every trial draws from its own seeded stream.

    ``factory(seed)`` builds the inner Optuna sampler; trial ``n`` gets
    ``factory(trial_seed(seed, n))``, created in ``before_trial`` and dropped in ``after_trial``.
    The inner samplers read their history from the study, as they always do, so a resumed study
    continues (trial numbers go on) instead of replaying, and concurrent processes on one store
    never share a stream.
    """

    def __init__(self, factory: Callable[[int], Any], seed: int, name: str = "") -> None:
        self.factory, self.seed, self.name = factory, int(seed), name
        self._by_trial: dict[int, Any] = {}

    def __str__(self) -> str:
        return f"PerTrialSeeded({self.name or self.factory})"

    def _inner(self, trial: Any) -> Any:
        inner = self._by_trial.get(trial.number)
        if inner is None:  # a trial this object did not start (e.g. asked through another process)
            inner = self._by_trial[trial.number] = self.factory(trial_seed(self.seed, trial.number))
        return inner

    def before_trial(self, study: Any, trial: Any) -> None:
        self._by_trial.pop(trial.number, None)
        self._inner(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self._inner(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self._inner(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        inner = self._inner(trial)
        try:
            inner.after_trial(study, trial, state, values)
        finally:
            self._by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:  # per-trial seeds already differ; nothing to reseed
        pass
