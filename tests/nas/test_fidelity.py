"""MO-ASHA (``nas.fidelity``): rungs, promotion by Pareto rank, paused candidates continued by
later trials, on both backends and with many workers; the sampler ranks paused results below
full-budget ones; a promoted run equals an uninterrupted one through the whole trial path."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from nas import attrs
from nas.errors import NasError
from nas.fidelity import (
    PROMOTED_IN_PLACE,
    RungRow,
    RungTable,
    cumulative_compute,
    rung_epochs,
    top_of_rung,
    trained_epochs,
    waiting,
)
from nas.front import load_trials
from nas.store import open_storage
from nas.study import parse_study
from nas.testing import TEST_POSTGRES, postgres_reachable, run_worker_processes, tiny_study_text

PG = TEST_POSTGRES
MO_ASHA = '\n[evaluator.fidelity]\npruner = "mo_asha"\nmin_epochs = {m}\nreduction_factor = {eta}\n'


def asha_text(name: str, url: str, trials: int, epochs: int = 9, m: int = 1, eta: int = 3, **kw) -> str:
    return tiny_study_text(name, url, trials=trials, kind=kw.pop("kind", "synthetic"), epochs=epochs,
                           sampler=kw.pop("sampler", "evolution"), **kw) + MO_ASHA.format(m=m, eta=eta)


def run_study(text: str, target: int, backend: str = "optuna"):
    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare

    spec = parse_study(text, "<asha>")
    prepare(spec, heartbeat_s=None)
    if backend == "ray":
        from nas.backends import ray_backend

        spec = spec.replace(backend="ray", ray=spec.ray.__class__(cpus_per_trial=1, max_concurrent=2))
        ray_backend.run(spec, target=target, show_progress=False)
    else:
        run_worker(spec, target)
    return spec


def check_invariants(spec, eta: int = 3) -> list:
    """What every MO-ASHA store must satisfy, whatever ran it; returns the trials."""
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage, heartbeat_s=None))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    budget = spec.evaluator.epochs
    rungs = rung_epochs(spec.evaluator.fidelity.min_epochs, eta, budget)
    rows = RungTable(open_storage(spec.storage, heartbeat_s=None)).rows(spec.name)
    by_rung = {r: [x for x in rows if x.rung == r] for r in rungs}
    by_number = {t.number: t for t in trials}
    for t in done:
        ua = t.user_attrs
        if ua.get(attrs.FEASIBLE) is False or attrs.REUSED_FROM in ua:
            continue
        assert ua[attrs.EPOCHS] in rungs + [budget]
        if attrs.PAUSED_AT in ua:  # waits at a rung, with that rung's values
            assert ua[attrs.PAUSED_AT] == ua[attrs.EPOCHS] < budget
            assert t.values[0] == pytest.approx(ua[attrs.ACCURACY_PER_EPOCH][ua[attrs.EPOCHS] - 1])
        if attrs.RESUMES in ua:  # continues a paused trial of the same genome from its rung
            src = by_number[ua[attrs.RESUMES]]
            assert src.user_attrs[attrs.ARCH_ID] == ua[attrs.ARCH_ID]
            assert ua[attrs.START_EPOCH] == src.user_attrs[attrs.PAUSED_AT]
            row = next(x for x in rows if x.trial_number == src.number and x.rung == ua[attrs.START_EPOCH])
            assert row.promoted_by == t.number and row.state_path is None
        else:
            assert ua[attrs.START_EPOCH] == 0
    for at in by_rung.values():
        for x in at:
            if x.promoted_by is not None:  # promoted only while in the top 1/eta of those at the rung then
                then = [y for y in at if y.created_at <= x.promoted_at]
                assert x.arch_id in {y.arch_id for y in top_of_rung(then, spec.directions, eta)}
        for x in at:
            if x.promoted_by is None:                              # waiting: its state is kept
                assert x.state_path and Path(x.state_path).exists()
    # one training per (genome, segment): nothing trained twice
    segments = [(t.user_attrs[attrs.ARCH_ID], t.user_attrs[attrs.START_EPOCH]) for t in done
                if attrs.START_EPOCH in t.user_attrs and attrs.REUSED_FROM not in t.user_attrs]
    assert len(segments) == len(set(segments))
    continued = [t.user_attrs[attrs.RESUMES] for t in done if attrs.RESUMES in t.user_attrs]
    assert len(continued) == len(set(continued))
    return trials


# --- units -------------------------------------------------------------------------------------
def test_rungs_are_geometric_below_the_budget():
    assert rung_epochs(1, 3, 9) == [1, 3]
    assert rung_epochs(1, 3, 12) == [1, 3, 9]
    assert rung_epochs(2, 2, 20) == [2, 4, 8, 16]
    with pytest.raises(NasError, match="no rung below the budget"):
        rung_epochs(4, 3, 4)


def _row(n: int, acc: float, flops: float) -> RungRow:
    return RungRow(f"a{n}", 1, n, (acc, flops), None, None)


def test_top_of_rung_is_the_first_n_over_eta_by_pareto_rank():
    d = ["maximize", "minimize"]
    rows = [_row(0, 0.5, 10), _row(1, 0.6, 20), _row(2, 0.4, 30), _row(3, 0.3, 40), _row(4, 0.7, 50),
            _row(5, 0.2, 60)]
    assert top_of_rung(rows[:2], d, 3) == []                     # floor(2 / 3) = 0: nobody yet
    top = top_of_rung(rows, d, 3)                                 # floor(6 / 3) = 2 of front {0, 1, 4}
    assert len(top) == 2 and {r.trial_number for r in top} <= {0, 1, 4}
    assert {r.trial_number for r in top_of_rung(rows, d, 2)} == {0, 1, 4}   # the whole first front
    # a dominated candidate never goes before a front member
    assert 5 not in {r.trial_number for r in top_of_rung(rows, d, 2)}


def test_paused_results_rank_below_every_full_budget_result():
    from nas.samplers.selection import rank_and_crowding

    def trial(n: int, acc: float, flops: float, paused: int | None = None) -> FrozenTrial:
        ua = {attrs.FEASIBLE: True} | ({attrs.PAUSED_AT: paused} if paused else {})
        return FrozenTrial(number=n, state=TrialState.COMPLETE, value=None, values=[acc, flops], datetime_start=None,
                           datetime_complete=None, params={}, distributions={}, user_attrs=ua, system_attrs={},
                           intermediate_values={}, trial_id=n)

    ts = [trial(0, 0.9, 10, paused=1), trial(1, 0.5, 20), trial(2, 0.4, 30), trial(3, 0.95, 5, paused=3)]
    rc = rank_and_crowding(ts, [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE])
    # 3 dominates 0 at its rung, but both rank after the full-budget ones; rung 3 before rung 1
    assert rc[1][0] == 0 and rc[2][0] == 1 and rc[3][0] == 2 and rc[0][0] == 3


def test_study_file_checks():
    url = "sqlite:///:memory:"
    with pytest.raises(NasError, match="no rung below the budget"):
        parse_study(asha_text("x", url, 4, epochs=3, m=3))
    with pytest.raises(NasError, match="needs evaluator kind 'proxy'"):
        parse_study(asha_text("x", url, 4, kind="zero_cost"))
    spec = parse_study(asha_text("x", url, 4))
    assert spec.evaluator.fidelity.pruner == "mo_asha" and not spec.prunes


# --- a whole study -----------------------------------------------------------------------------
def test_optuna_study_pauses_promotes_and_continues(tmp_path):
    spec = run_study(asha_text("asha", f"sqlite:///{tmp_path / 's.db'}", 40), 40)
    trials = check_invariants(spec)
    ua = [t.user_attrs for t in trials if t.state == TrialState.COMPLETE]
    assert sum(attrs.PAUSED_AT in a for a in ua) >= 10                  # many stopped at a rung
    assert sum(attrs.RESUMES in a for a in ua) >= 3                     # and later ones continued
    assert sum(a.get(attrs.EPOCHS) == 9 for a in ua) >= 3               # some trained the whole budget
    # the paused ones inform the sampler: children were bred while most of the study was paused
    origins = Counter(t.system_attrs.get("nas:plan_origin", "")[:5] for t in trials)
    assert origins["child"] >= 10
    # compute: far less than training every candidate to the full budget
    recs = load_trials(spec.storage, spec.name)
    total = cumulative_compute(recs)[-1][1]
    assert total == sum(trained_epochs(r.user_attrs) for r in recs)
    assert total < 0.6 * 9 * len(recs)
    # the front holds only full-budget members; the waiting ones are known
    from nas.front import pareto_front

    assert all(r.epochs == 9 for r in pareto_front(recs, spec.objective_names))
    w = waiting(trials)
    assert w and all(trials[n].user_attrs[attrs.PAUSED_AT] == rung for n, rung in w.items())


def test_a_resumed_study_continues_its_rungs(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = run_study(asha_text("res", url, 20), 20)
    rows_before = len(RungTable(open_storage(url, heartbeat_s=None)).rows("res"))
    spec = run_study(asha_text("res", url, 45), 45)
    trials = check_invariants(spec)
    assert len([t for t in trials if t.state.is_finished()]) >= 45
    assert len(RungTable(open_storage(url, heartbeat_s=None)).rows("res")) > rows_before


def test_a_lost_promotion_is_enqueued_again(tmp_path):
    """A promotion claimed by a worker that died before its continuation was enqueued (or ran)
    is released and enqueued by the next worker's start (``enqueue_waiting``)."""
    from nas.fidelity import PROMOTION_QUEUED, SuccessiveHalving

    url = f"sqlite:///{tmp_path / 'l.db'}"
    spec = run_study(asha_text("lost", url, 12), 12)
    storage = open_storage(url, heartbeat_s=None)
    table = RungTable(storage)
    waiting_rows = [r for r in table.rows("lost") if r.promoted_by is None]
    assert waiting_rows
    r = waiting_rows[0]
    table.set_promoted_by("lost", r.arch_id, r.rung, PROMOTION_QUEUED)  # claimed, never enqueued
    sh = SuccessiveHalving(spec, storage, tmp_path / "rungs")
    sh.enqueue_waiting()
    row = next(x for x in table.rows("lost") if (x.arch_id, x.rung) == (r.arch_id, r.rung))
    study = optuna.load_study(study_name="lost", storage=storage)
    queued = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]
    in_top = r.arch_id in {x.arch_id for x in top_of_rung(table.rows("lost", r.rung), spec.directions, 3)}
    if in_top:
        assert row.promoted_by == PROMOTION_QUEUED
        assert any(t.user_attrs.get(attrs.RESUMES) == r.trial_number for t in queued)
    else:
        assert row.promoted_by is None


def test_a_continuation_whose_worker_died_is_released(tmp_path):
    """A continuation trial that died mid-segment (FAILED by the heartbeat) leaves its row
    promoted with the state still on disk: the next worker's start releases it, so it can be
    promoted again instead of being lost."""
    from nas.fidelity import SuccessiveHalving

    url = f"sqlite:///{tmp_path / 'd.db'}"
    spec = run_study(asha_text("died", url, 12), 12)
    storage = open_storage(url, heartbeat_s=None)
    table = RungTable(storage)
    r = next(x for x in table.rows("died") if x.promoted_by is None)
    study = optuna.load_study(study_name="died", storage=storage)
    dead = study.ask()
    study.tell(dead, state=TrialState.FAIL)
    table.set_promoted_by("died", r.arch_id, r.rung, dead.number)   # it took the state, then died
    SuccessiveHalving(spec, storage, tmp_path / "rungs").enqueue_waiting()
    row = next(x for x in table.rows("died") if (x.arch_id, x.rung) == (r.arch_id, r.rung))
    assert row.promoted_by != dead.number and row.state_path == r.state_path


def test_a_promoted_run_equals_an_uninterrupted_one_through_the_trial_path(tmp_path):
    """Real proxy training: a candidate paused at a rung and continued by a later trial ends
    with the same per-epoch accuracies as the same genome trained without a pause."""
    from nas.evaluator import TrialEvaluator

    url = f"sqlite:///{tmp_path / 'p.db'}"
    text = asha_text("prox", url, 10, epochs=3, m=1, eta=2, kind="proxy")
    spec = run_study(text, 10)
    trials = check_invariants(spec, eta=2)
    cont = [t for t in trials if t.state == TrialState.COMPLETE and attrs.RESUMES in t.user_attrs]
    assert cont, "no paused candidate was promoted in this study (seeded: it has one)"
    t = cont[0]
    te = TrialEvaluator(spec)
    from search_space.genome import ArchSpec

    cand = te.candidate_for(ArchSpec.from_json(t.user_attrs[attrs.GENOME]))
    ref = te.evaluate(cand)                                      # uninterrupted, same seed
    assert ref.status == "ok"
    n = t.user_attrs[attrs.EPOCHS]
    assert t.user_attrs[attrs.ACCURACY_PER_EPOCH] == ref.attrs[attrs.ACCURACY_PER_EPOCH][:n]


# --- many workers, Ray -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not postgres_reachable(PG), reason=f"no PostgreSQL server at {PG}")
def test_three_workers_on_postgres_share_the_rungs():
    from nas.commands.search import prepare
    from nas.store import ArchClaims, TrialSlots

    name = f"pytest_asha_{uuid.uuid4().hex[:10]}"
    spec = parse_study(asha_text(name, PG, 45), "<asha>")
    prepare(spec, heartbeat_s=None)
    storage = open_storage(PG, heartbeat_s=None)
    try:
        assert run_worker_processes(spec, 45) == [0, 0, 0]
        trials = check_invariants(spec)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len({t.user_attrs[attrs.WORKER] for t in done}) == 3
        assert sum(attrs.RESUMES in t.user_attrs for t in done) >= 2
    finally:
        import shutil

        from nas.weights import weights_dir

        shutil.rmtree(weights_dir(spec), ignore_errors=True)  # the paused states
        RungTable(storage).forget_study(name)
        ArchClaims(storage).forget_study(name)
        TrialSlots(storage).forget_study(name)
        optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_ray_backend_runs_mo_asha(tmp_path):
    import ray

    try:  # eta 2, rungs 1 and 2 of 4 epochs: promotions start at the second candidate of a rung
        spec = run_study(asha_text("rasha", f"sqlite:///{tmp_path / 'ray.db'}", 10, epochs=4, eta=2), 10,
                         backend="ray")
    finally:
        ray.shutdown()
    trials = check_invariants(spec, eta=2)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) >= 10
    assert sum(attrs.PAUSED_AT in t.user_attrs for t in done) >= 2
    assert sum(attrs.RESUMES in t.user_attrs for t in done) >= 1
    assert PROMOTED_IN_PLACE in {r.promoted_by for r in RungTable(open_storage(spec.storage, heartbeat_s=None))
                                 .rows(spec.name)}
