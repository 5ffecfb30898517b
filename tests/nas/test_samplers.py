"""Contract tests of the samplers (``nas.samplers``): the evolutionary sampler proposes valid,
new genomes within the caps, ranks feasible before infeasible, is a function of the seed and the
history (so a resumed study continues exactly where it stopped), and every sampler seeds its
draws per trial (a resumed study never replays its stream; issue 13.7)."""

from __future__ import annotations

import os
import random
import uuid

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from nas import attrs
from nas.samplers import SAMPLER_NAMES, make_sampler, trial_seed
from nas.samplers.evolution import ORIGIN_KEY, PLAN_ID_KEY, EvolutionSampler
from nas.samplers.genome_ops import GenomeOps
from nas.samplers.presets import preset_plans
from nas.samplers.selection import rank_and_crowding, survivors
from nas.space import SearchSpace
from nas.study import StudySpec, load_study, parse_study
from nas.testing import TEST_POSTGRES, postgres_reachable, run_worker_processes, tiny_study_text

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quickstart(storage: str, name: str, sampler: str = "evolution", trials: int = 20, seed: int = 0) -> StudySpec:
    """The quickstart study (a large space) with the synthetic evaluator, one worker."""
    base = load_study(os.path.join(ROOT, "studies", "quickstart.toml"))
    ev = base.evaluator.__class__(**{**base.evaluator.__dict__, "kind": "synthetic"})
    return base.replace(name=name, storage=storage, sampler=sampler, trials=trials, seed=seed, workers=1,
                        timeout_s=None, evaluator=ev)


def run(spec: StudySpec, target: int) -> optuna.Study:
    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare

    prepare(spec, heartbeat_s=None)
    run_worker(spec, target)
    return optuna.load_study(study_name=spec.name, storage=spec.storage)


def params_seq(study: optuna.Study) -> list[dict]:
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


# --- variation ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ops() -> GenomeOps:
    return GenomeOps(SearchSpace(quickstart("sqlite:///:memory:", "ops")))


@pytest.mark.parametrize("op", ["mixer", "knob", "depth", "width", "stem", "patch", "pos", "mlp", "global", "shape",
                                "stage", "crossover"])
def test_every_child_is_a_valid_genome_of_the_space(ops, op):
    """Each operator, on 40 random parents: the child replays to a genome that validates, its
    params are exactly what ``suggest`` asks for (replaying them again changes nothing), and the
    operator changes the genome in most cases (it is no no-op)."""
    rng = random.Random(op)
    changed = 0
    for _ in range(40):
        a, spec_a = ops.random(rng)
        if op == "crossover":
            b, _ = ops.replay({"shape": a["shape"]}, rng)  # parents of one shape exchange stages
            child = ops.crossover(a, b, rng)
        else:
            if op == "stage" and a["shape"] != "pyramid":
                a, spec_a = ops.replay({**a, "shape": "pyramid"}, rng)
            child, name = ops.mutate(a, rng, op)
            assert name == op
        params, spec = ops.replay(child, rng)
        assert spec.validate() is spec
        again, spec2 = ops.replay(params, random.Random(0))
        assert again == params and spec2.arch_id == spec.arch_id
        changed += spec.arch_id != spec_a.arch_id
    assert changed >= 20, f"{op} changed only {changed} of 40 genomes"


def test_mixer_change_keeps_shared_knobs(ops):
    rng = random.Random(1)
    plan = None
    while plan is None or plan.get("shape") != "isotropic" or plan["iso.mixer"] != "attention":
        plan, _ = ops.replay({"shape": "isotropic", "iso.mixer": "attention", "iso.attention.num_heads": 2}, rng)
    for _ in range(30):
        child, _ = ops.mutate(plan, rng, "mixer")
        new = child["iso.mixer"]
        assert "iso.attention.num_heads" not in child
        if new in ("window", "sra", "axial", "performer"):  # they share num_heads with attention
            assert child[f"iso.{new}.num_heads"] == 2
        params, _ = ops.replay(child, rng)
        assert params["iso.mixer"] == new


def test_presets_shrink_to_the_caps(ops):
    spec = quickstart("sqlite:///:memory:", "warm")
    sampler = EvolutionSampler(spec)
    plans = preset_plans(spec, ops, sampler.fits, 0)
    assert [p[0] for p in plans] == list(spec.presets.names)
    for name, _plan, g in plans:
        assert sampler.fits(g), (name, g.summary(), sampler.costs(g))
    deit = next(g for n, _, g in plans if n == "deit_tiny")
    assert len(deit.stages) == 1 and deit.stages[0].mixer == "attention"


# --- selection --------------------------------------------------------------------------------
def _trial(number: int, acc: float, flops: float, violation: float | None) -> optuna.trial.FrozenTrial:
    t = create_trial(state=TrialState.COMPLETE, values=[acc, flops], params={"x": 0.0},
                     distributions={"x": FloatDistribution(0, 1)},
                     system_attrs={} if violation is None else {"constraints:max_flops": violation})
    t.number = number
    return t


def test_constraint_domination_orders_feasible_before_infeasible():
    dirs = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    trials = [_trial(0, 0.10, 9e6, 0.0),     # feasible, poor
              _trial(1, 0.90, 1e5, 0.5),     # infeasible with the best values
              _trial(2, 0.95, 1e5, 0.1),     # infeasible, smaller violation
              _trial(3, 0.50, 5e5, -0.2),    # feasible, dominates 0
              _trial(4, 0.20, 2e5, -0.5)]    # feasible, non-dominated with 3
    rc = rank_and_crowding(trials, dirs)
    assert rc[3][0] == rc[4][0] == 0 and rc[0][0] == 1
    assert rc[2][0] == 2 and rc[1][0] == 3  # every feasible rank first; then by violation
    assert [t.number for t in survivors(trials, dirs, 3)] == [0, 3, 4]


# --- the sampler in studies --------------------------------------------------------------------
def test_no_arch_id_trained_twice_and_proposals_within_caps(tmp_path):
    spec = quickstart(f"sqlite:///{tmp_path / 's.db'}", "once", trials=40)
    study = run(spec, 40)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 40
    ids = [t.user_attrs[attrs.ARCH_ID] for t in done]
    assert len(set(ids)) == 40
    assert not any(attrs.REUSED_FROM in t.user_attrs for t in done)
    assert all(t.system_attrs[PLAN_ID_KEY] == t.user_attrs[attrs.ARCH_ID] for t in done)  # the plan is what ran
    assert all(t.user_attrs[attrs.FEASIBLE] for t in done)  # children over a cap are re-drawn first
    origins = [t.system_attrs[ORIGIN_KEY] for t in done]
    assert sum(o.startswith("child") for o in origins) >= 25
    # the trial's params name the genes (e.g. the mixer of each stage)
    assert any("s1.mixer" in t.params for t in done) and all("shape" in t.params for t in done)


def test_warm_start_proposes_the_presets_first(tmp_path):
    spec = quickstart(f"sqlite:///{tmp_path / 'w.db'}", "warm", trials=6)
    spec = spec.replace(presets=spec.presets.__class__(names=spec.presets.names, warm_start=True))
    study = run(spec, 6)
    first = sorted(study.trials, key=lambda t: t.number)[:3]
    assert [t.system_attrs[ORIGIN_KEY] for t in first] == [f"preset:{n}" for n in spec.presets.names]
    assert all(t.user_attrs[attrs.FEASIBLE] for t in first)


def test_resumed_study_continues_exactly_as_an_uninterrupted_one(tmp_path):
    """Same seed and same history -> same proposals: 12 trials then a resume (a new process's
    sampler) to 30 proposes exactly what one uninterrupted run of 30 proposes, and a fresh
    sampler rebuilds the very same population from the store."""
    a = quickstart(f"sqlite:///{tmp_path / 'a.db'}", "whole", trials=30, seed=3)
    b = quickstart(f"sqlite:///{tmp_path / 'b.db'}", "resumed", trials=30, seed=3)
    sa = run(a, 30)
    run(b, 12)
    sb = run(b, 30)
    assert params_seq(sa) == params_seq(sb)
    assert len({t.user_attrs[attrs.ARCH_ID] for t in sb.trials}) == 30
    s1, s2 = EvolutionSampler(a), EvolutionSampler(b)
    pop1, _ = s1.sync(sa)
    pop2, _ = s2.sync(sb)
    assert [m.number for m in pop1] == [m.number for m in pop2] and len(pop1) > 5


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_same_seed_same_history_same_proposals(tmp_path, sampler):
    trials = 6 if sampler == "gp" else 10
    s1 = run(quickstart(f"sqlite:///{tmp_path / 'x.db'}", "x", sampler, trials, seed=5), trials)
    s2 = run(quickstart(f"sqlite:///{tmp_path / 'y.db'}", "y", sampler, trials, seed=5), trials)
    assert params_seq(s1) == params_seq(s2)
    s3 = run(quickstart(f"sqlite:///{tmp_path / 'z.db'}", "z", sampler, trials, seed=6), trials)
    assert params_seq(s3) != params_seq(s1)


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2", "evolution"])
def test_resume_does_not_replay_the_stream(tmp_path, sampler):
    """Issue 13.7: 10 trials, then resumed to 20: no trial of the resumed part repeats the
    genome its counterpart of the first part drew (the old samplers replayed all 10)."""
    spec = quickstart(f"sqlite:///{tmp_path / 'r.db'}", "resume", sampler, 20, seed=0)
    run(spec, 10)
    study = run(spec, 20)
    seq = params_seq(study)
    assert len(seq) == 20
    assert all(seq[i] != seq[i + 10] for i in range(10))


def test_single_objective_study_evolves(tmp_path):
    """Accuracy alone under a FLOP cap (as studies/digits_single.toml): ranks degenerate to the
    order of accuracy; children are proposed and none is trained twice."""
    spec = parse_study(tiny_study_text("single", f"sqlite:///{tmp_path / 'one.db'}", trials=16, sampler="evolution",
                                       objectives=("accuracy",)))
    study = run(spec, 16)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 16 and len({t.user_attrs[attrs.ARCH_ID] for t in done}) == 16
    assert any(t.system_attrs[ORIGIN_KEY].startswith("child") for t in done)


def test_trial_seeds_differ_per_trial_and_study_seed():
    seeds = {trial_seed(s, n) for s in range(3) for n in range(200)}
    assert len(seeds) == 600
    assert trial_seed(1, 2) == trial_seed(1, 2)


def test_unknown_sampler_is_refused_in_one_line():
    from nas.errors import NasError

    text = tiny_study_text("bad", "sqlite:///:memory:", sampler="evolutoin")
    with pytest.raises(NasError, match="evolution"):
        parse_study(text)
    spec = parse_study(tiny_study_text("ok", "sqlite:///:memory:")).replace(sampler="nope")
    with pytest.raises(NasError, match="unknown sampler 'nope'"):
        make_sampler(spec)


def test_default_sampler_is_evolution():
    text = tiny_study_text("d", "sqlite:///:memory:").replace('sampler = "nsga2"\n', "")
    assert parse_study(text).sampler == "evolution"


# --- many workers, Ray ----------------------------------------------------------------------------
PG = TEST_POSTGRES


@pytest.mark.slow
@pytest.mark.skipif(not postgres_reachable(PG), reason=f"no PostgreSQL server at {PG}")
def test_three_workers_on_postgres_do_not_collapse_into_duplicates():
    from nas.commands.search import prepare
    from nas.store import ArchClaims, open_storage

    name = f"pytest_evo_{uuid.uuid4().hex[:10]}"
    spec = quickstart(PG, name, trials=30)
    prepare(spec, heartbeat_s=None)
    try:
        assert run_worker_processes(spec, 30) == [0, 0, 0]
        study = optuna.load_study(study_name=name, storage=open_storage(PG, heartbeat_s=None))
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(done) >= 30
        workers = {t.user_attrs[attrs.WORKER] for t in done}
        assert len(workers) == 3
        trained = [t.user_attrs[attrs.ARCH_ID] for t in done if attrs.REUSED_FROM not in t.user_attrs]
        assert len(trained) == len(set(trained))                 # none trained twice
        assert len(set(t.user_attrs[attrs.ARCH_ID] for t in done)) >= len(done) - 1  # no collapse
        assert sum(t.system_attrs[ORIGIN_KEY].startswith("child") for t in done) >= 10
    finally:
        storage = open_storage(PG, heartbeat_s=None)
        ArchClaims(storage).forget_study(name)
        optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_ray_backend_runs_the_evolution_sampler(tmp_path):
    import ray

    from nas.backends import ray_backend
    from nas.commands.search import prepare

    spec = quickstart(f"sqlite:///{tmp_path / 'ray.db'}", "rayevo", trials=14).replace(backend="ray")
    spec = spec.replace(ray=spec.ray.__class__(cpus_per_trial=1, max_concurrent=2))
    prepare(spec, heartbeat_s=None)
    try:
        result = ray_backend.run(spec, target=14, show_progress=False, ray_init={"num_cpus": 2, "address": "local"})  # its own instance
    finally:
        ray.shutdown()
    assert result.done == 14
    study = optuna.load_study(study_name="rayevo", storage=spec.storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 14
    assert all(t.system_attrs[PLAN_ID_KEY] == t.user_attrs[attrs.ARCH_ID] for t in done)
    assert any(t.system_attrs[ORIGIN_KEY].startswith("child") for t in done)
    assert len({t.user_attrs[attrs.ARCH_ID] for t in done}) == 14
