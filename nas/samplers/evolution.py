"""A genome-native, constraint-aware, steady-state evolutionary sampler.

``EvolutionSampler`` is an Optuna ``BaseSampler`` that plans a whole genome per trial:

1. ``before_trial`` reads the study's trials from the store (incrementally: only trials it has
   not seen finished), folds every finished trial, in trial-number order, into a population of
   at most ``population_size`` members kept by constrained non-dominated sorting with crowding
   (``nas.samplers.selection``; Deb et al. 2002, steady-state as in Durillo et al. 2009), and
   plans the trial's genome: a preset of the study shrunk to the caps (warm start), a random
   immigrant (start-up, and a share afterwards), or a child of two tournament parents (stage
   crossover, then one genome mutation; ``nas.samplers.genome_ops``). A child whose arch_id the
   study already holds (finished or running) is varied again; a child over the FLOP/parameter
   caps (``evaluators.screening``, no weights) is re-drawn. With a surrogate
   (``nas.samplers.surrogate``) several children are drawn and the most promising is proposed.
2. The plan (the parameter values ``SearchSpace.suggest`` asks for) is kept on the trial as the
   system attribute ``nas:plan`` (with ``nas:plan_arch_id`` and ``nas:plan_origin``), and
   ``sample_independent`` answers each define-by-run ``suggest`` call from it; so the trial's
   parameters name the genes (``s1.mixer``, ``s1.depth``, ...).

Everything is read from the store, so many workers, a resumed study and Ray Tune's
``OptunaSearch`` on the same store need nothing special. The population after the first ``k``
finished trials depends only on those trials, and trial ``n`` draws from
``random.Random(trial_seed(seed, n))``: the same seed and the same history give the same
proposals, and no resumed or parallel worker replays another's stream.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState

from nas import attrs
from nas.optuna_internals import enqueued_params, set_trial_system_attrs
from nas.samplers import trial_seed
from nas.samplers.genome_ops import Dist, GenomeOps, Plan
from nas.samplers.selection import fidelity_level
from nas.space import InvalidCandidate, SearchSpace, num_classes_for
from nas.study import StudySpec
from search_space.genome import ArchSpec

PLAN_KEY = "nas:plan"
PLAN_ID_KEY = "nas:plan_arch_id"
ORIGIN_KEY = "nas:plan_origin"


@dataclass(frozen=True)
class EvolutionConfig:
    """Settings of ``EvolutionSampler``.

    Args:
        population_size: members kept by survival selection (NSGA-II's N).
        n_startup: trials numbered below this are random immigrants (or presets).
        immigrant_share: probability that a later trial is a random immigrant.
        crossover_prob: probability that a child comes from two parents (then mutated once).
        extra_mutation_prob: probability of a second mutation.
        candidates: children drawn per trial when a surrogate ranks them.
        max_attempts: variations tried before falling back to a random immigrant.
        warm_start: seed the population with the study's presets, shrunk to the caps.
        surrogate_window: the surrogate is fitted on at most this many latest finished trials.
    """

    population_size: int = 24
    n_startup: int = 10
    immigrant_share: float = 0.1
    crossover_prob: float = 0.5
    extra_mutation_prob: float = 0.3
    candidates: int = 4
    max_attempts: int = 60
    warm_start: bool = False
    surrogate_window: int = 400

    @classmethod
    def for_budget(cls, trials: int, warm_start: bool = False) -> EvolutionConfig:
        """Population and start-up sized to a budget of ``trials``."""
        return cls(population_size=max(8, min(32, trials // 3)), n_startup=max(6, min(12, trials // 6)),
                   warm_start=warm_start)


@dataclass
class Member:
    """A finished trial as the sampler sees it: its plan, genome and Optuna trial."""

    number: int
    plan: Plan
    spec: ArchSpec
    trial: Any


class EvolutionSampler(BaseSampler):
    """See the module docstring.

    Args:
        study: the study file (space, objectives, caps, presets, seed).
        target: the trial budget when the study file gives none (sizes the population).
        surrogate: rank several children with an online surrogate (``nas.samplers.surrogate``).
        config: explicit settings (default ``EvolutionConfig.for_budget``).
    """

    def __init__(self, study: StudySpec, target: int | None = None, surrogate: bool = False,
                 config: EvolutionConfig | None = None) -> None:
        self.study = study
        self.seed = int(study.seed)
        n = study.trials or target or 50  # the study's budget, so a resume sizes it alike
        self.config = config or EvolutionConfig.for_budget(n, warm_start=study.presets.warm_start)
        self.limits = {k: v for k, v in study.constraints.limits().items() if k in ("max_flops", "max_params")}
        self.use_surrogate = surrogate
        self.timings: list[float] = []              # seconds per before_trial (benchmarks)
        self._plans: dict[int, Plan] = {}
        self._fallback: dict[int, RandomSampler] = {}
        self._costs: dict[str, tuple[int, int]] = {}
        self._reset(None)

    def __str__(self) -> str:
        return "EvolutionSampler" + ("(surrogate)" if self.use_surrogate else "")

    def _reset(self, name: str | None) -> None:
        self._study_name = name
        self._ops: GenomeOps | None = None
        self._scan = 0                      # trials numbered below this are finished and seen
        self._seen: set[int] = set()        # finished trials at or above _scan already seen
        self._held: set[str] = set()        # arch_ids of finished trials
        self._folded = 0                    # trials numbered below this are in the population's history
        self._population: list[Member] = []
        self._members: dict[int, Member | None] = {}
        self._presets: list[tuple[str, Plan, ArchSpec]] | None = None
        self._surrogate = None

    # --- Optuna's sampler interface ------------------------------------------------------------
    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Any, trial: Any) -> None:
        t0 = time.perf_counter()
        fixed = enqueued_params(trial)
        if fixed:  # an enqueued trial (e.g. an MO-ASHA promotion, nas.fidelity): its genome is given
            self._plans[trial.number] = fixed
            origin = f"continues {trial.user_attrs[attrs.RESUMES]}" if attrs.RESUMES in trial.user_attrs else "enqueued"
            set_trial_system_attrs(study, trial, {PLAN_KEY: fixed, ORIGIN_KEY: origin})
            self.timings.append(time.perf_counter() - t0)
            return
        exclude: set[str] = set()
        for _ in range(3):
            plan, spec, origin = self.propose(study, trial.number, exclude=exclude)
            # another worker may have planned the same genome while this one chose (ranking children
            # with the surrogate takes a while): look again just before recording it, choose again if so
            if spec.arch_id not in self._running_ids(study, trial.number):
                break
            exclude.add(spec.arch_id)
        self._plans[trial.number] = plan
        set_trial_system_attrs(study, trial, {PLAN_KEY: plan, PLAN_ID_KEY: spec.arch_id, ORIGIN_KEY: origin})
        self.timings.append(time.perf_counter() - t0)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        plan = self._plans.get(trial.number)
        if plan is None:
            plan = trial.system_attrs.get(PLAN_KEY) or {}
        if param_name in plan and Dist.from_optuna(param_distribution).contains(plan[param_name]):
            return plan[param_name]
        # not planned (another space than the plan's): a seeded draw of this trial's own stream
        fb = self._fallback.get(trial.number)
        if fb is None:
            fb = self._fallback[trial.number] = RandomSampler(seed=trial_seed(self.seed, trial.number))
        return fb.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Sequence[float] | None) -> None:
        self._plans.pop(trial.number, None)
        self._fallback.pop(trial.number, None)

    # --- history -------------------------------------------------------------------------------
    def _space(self, trials: Sequence[Any]) -> GenomeOps:
        if self._ops is None:
            num_classes = num_classes_for(self.study.data)
            in_chans = None
            if num_classes is None:  # an ImageFolder: the classes the stored genomes were built with
                for t in trials:
                    g = t.user_attrs.get(attrs.GENOME)
                    if g:
                        stored = ArchSpec.from_json(g)
                        num_classes, in_chans = stored.num_classes, stored.in_chans
                        break
            self._ops = GenomeOps(SearchSpace(self.study, num_classes=num_classes, in_chans=in_chans))
        return self._ops

    def sync(self, study: Any, current: int | None = None) -> tuple[list[Member], set[str]]:
        """Read new trials; fold the finished prefix into the population. Returns the parent
        pool (population plus members finished out of order) and the running trials' arch_ids."""
        if study.study_name != self._study_name:
            self._reset(study.study_name)
        trials = study.get_trials(deepcopy=False)
        ops = self._space(trials)
        running: set[str] = set()
        extras: list[Member] = []
        for i in range(self._scan, len(trials)):
            t = trials[i]
            if t.number == current:
                continue
            if not t.state.is_finished():
                for key in (t.system_attrs.get(PLAN_ID_KEY), t.user_attrs.get(attrs.ARCH_ID)):
                    if key:
                        running.add(key)
                continue
            if t.number not in self._seen:
                self._seen.add(t.number)
                for key in (t.system_attrs.get(PLAN_ID_KEY), t.user_attrs.get(attrs.ARCH_ID)):
                    if key:
                        self._held.add(key)
            if i == self._scan:
                self._scan += 1
                self._seen.discard(t.number)
            elif t.state == TrialState.COMPLETE:
                m = self._member(t, ops)
                if m is not None:
                    extras.append(m)
        while self._folded < self._scan:
            t = trials[self._folded]
            self._folded += 1
            if t.state != TrialState.COMPLETE:
                continue
            m = self._member(t, ops)
            if m is None:
                continue
            same = [p for p in self._population if p.spec.arch_id == m.spec.arch_id]
            if same:  # one member per genome: its highest-fidelity result (an MO-ASHA continuation)
                if fidelity_level(m.trial) <= fidelity_level(same[0].trial):
                    continue
                self._population = [p for p in self._population if p is not same[0]]
            self._population = self._survive(self._population + [m], study.directions)
        have = {m.spec.arch_id for m in self._population}
        pool = list(self._population)
        for m in extras:
            if m.spec.arch_id not in have:
                have.add(m.spec.arch_id)
                pool.append(m)
        return pool, running

    @staticmethod
    def _running_ids(study: Any, current: int) -> set[str]:
        """The arch_ids planned or suggested by the study's other running trials, read afresh."""
        out: set[str] = set()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number != current:
                out.update(k for k in (t.system_attrs.get(PLAN_ID_KEY), t.user_attrs.get(attrs.ARCH_ID)) if k)
        return out

    def _member(self, t: Any, ops: GenomeOps) -> Member | None:
        if t.number in self._members:
            return self._members[t.number]
        m = None
        if t.values is not None and t.params:
            try:
                plan, spec = ops.replay(dict(t.params), random.Random(0))
                m = Member(t.number, plan, spec, t)
            except InvalidCandidate:
                m = None
        self._members[t.number] = m
        return m

    def _survive(self, members: list[Member], directions: Sequence[Any]) -> list[Member]:
        from nas.samplers.selection import survivors

        by_number = {m.number: m for m in members}
        kept = survivors([m.trial for m in members], directions, self.config.population_size)
        return [by_number[t.number] for t in kept]

    # --- planning ------------------------------------------------------------------------------
    def propose(self, study: Any, number: int, exclude: set[str] | frozenset[str] = frozenset()
                ) -> tuple[Plan, ArchSpec, str]:
        """The plan, genome and origin (``preset:NAME``, ``random``, ``child:<ops>``) of trial
        ``number``; genomes the study holds, plans of running trials and ``exclude`` are avoided."""
        pool, running = self.sync(study, current=number)
        ops = self._ops
        assert ops is not None
        rng = random.Random(trial_seed(self.seed, number))
        taken = self._held | running | set(exclude)
        cfg = self.config
        if cfg.warm_start:
            for name, plan, spec in self._preset_plans():
                if spec.arch_id not in taken:
                    return plan, spec, f"preset:{name}"
        if number < cfg.n_startup or len(pool) < 2 or rng.random() < cfg.immigrant_share:
            return self._immigrant(rng, taken)
        k = cfg.candidates if self.use_surrogate else 1
        children = self._children(pool, study.directions, rng, taken, k)
        if not children:
            return self._immigrant(rng, taken)
        if len(children) == 1:
            return children[0]
        history = [m for m in self._members.values() if m is not None]
        best = self._surrogate_model().choose(pool, history, children, number, self.seed)
        return children[best]

    def _immigrant(self, rng: random.Random, taken: set[str]) -> tuple[Plan, ArchSpec, str]:
        """A random genome the study does not hold, within the caps when one is found."""
        ops = self._ops
        assert ops is not None
        last = None
        for _ in range(self.config.max_attempts):
            try:
                plan, spec = ops.random(rng)
            except InvalidCandidate:
                continue
            if spec.arch_id in taken:
                continue
            last = (plan, spec, "random")
            if self.fits(spec):
                return last
        if last is None:  # every draw was held or invalid: let suggest draw once more
            plan, spec = ops.random(rng)
            last = (plan, spec, "random")
        return last

    def _children(self, pool: list[Member], directions: Sequence[Any], rng: random.Random, taken: set[str],
                  k: int) -> list[tuple[Plan, ArchSpec, str]]:
        from nas.samplers.selection import rank_and_crowding, tournament

        ops = self._ops
        assert ops is not None
        cfg = self.config
        rc = rank_and_crowding([m.trial for m in pool], directions)
        by_number = {m.number: m for m in pool}
        trials = [m.trial for m in pool]
        out: list[tuple[Plan, ArchSpec, str]] = []
        ids = set(taken)
        child: Plan | None = None
        origin = ""
        for _attempt in range(cfg.max_attempts * k):
            if len(out) >= k:
                break
            if child is None:  # a fresh draw from the parents
                p1 = by_number[tournament(trials, rc, rng).number]
                if rng.random() < cfg.crossover_prob and len(pool) > 1:
                    p2 = by_number[tournament(trials, rc, rng).number]
                    child, origin = ops.crossover(p1.plan, p2.plan, rng), f"child of {p1.number}x{p2.number}:"
                else:
                    child, origin = dict(p1.plan), f"child of {p1.number}:"
                child, op = ops.mutate(child, rng)
                origin += op
                if rng.random() < cfg.extra_mutation_prob:
                    child, op = ops.mutate(child, rng)
                    origin += "+" + op
            else:  # held already: vary again
                child, op = ops.mutate(child, rng)
                origin += "+" + op
            try:
                plan, spec = ops.replay(child, rng)
            except InvalidCandidate:
                child = None
                continue
            if spec.arch_id in ids:
                child = plan
                continue
            if not self.fits(spec):  # over a cap: re-drawn from the parents
                child = None
                continue
            ids.add(spec.arch_id)
            out.append((plan, spec, origin))
            child = None
        return out

    # --- costs, presets, surrogate ------------------------------------------------------------
    def costs(self, spec: ArchSpec) -> tuple[int, int]:
        """(FLOPs, params) of ``spec`` by ``evaluators.screening`` (cached by arch_id)."""
        hit = self._costs.get(spec.arch_id)
        if hit is None:
            from evaluators.screening import screen

            c = screen(spec)
            hit = (int(c.flops), int(c.params))
            if len(self._costs) > 20_000:
                self._costs.clear()
            self._costs[spec.arch_id] = hit
        return hit

    def fits(self, spec: ArchSpec) -> bool:
        """Whether ``spec`` meets the study's FLOP and parameter caps."""
        if not self.limits:
            return True
        flops, params = self.costs(spec)
        return flops <= self.limits.get("max_flops", float("inf")) and params <= self.limits.get("max_params", float("inf"))

    def _preset_plans(self) -> list[tuple[str, Plan, ArchSpec]]:
        if self._presets is None:
            from nas.samplers.presets import preset_plans

            assert self._ops is not None
            self._presets = preset_plans(self.study, self._ops, self.fits, self.seed)
        return self._presets

    def _surrogate_model(self) -> Any:
        if self._surrogate is None:
            from nas.samplers.surrogate import Surrogate

            assert self._ops is not None
            self._surrogate = Surrogate(self.study, self.costs, window=self.config.surrogate_window)
        return self._surrogate
