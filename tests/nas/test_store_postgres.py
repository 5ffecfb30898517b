"""The study store on the machine's PostgreSQL server: three concurrent `nas search` processes
on one study (no trial lost, none duplicated), and a worker killed with SIGKILL mid-trial whose
trial is failed by heartbeat and retried on resume (no finished trial lost)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from nas import attrs
from nas.cli import main
from nas.front import load_trials
from nas.optuna_internals import trial_id
from nas.store import normalize_url
from nas.testing import TEST_POSTGRES, postgres_reachable, tiny_study_text

ROOT = Path(__file__).resolve().parents[2]
PG = TEST_POSTGRES
PG_DRIVER = normalize_url(PG)  # for direct optuna/sqlalchemy calls

pytestmark = pytest.mark.skipif(not postgres_reachable(PG), reason=f"no PostgreSQL server at {PG}")


@pytest.fixture
def study_name():
    name = f"pytest_{uuid.uuid4().hex[:10]}"
    yield name
    try:
        from nas.store import ArchClaims, TrialSlots, open_storage

        storage = open_storage(PG, heartbeat_s=None)
        ArchClaims(storage).forget_study(name)
        TrialSlots(storage).forget_study(name)
        optuna.delete_study(study_name=name, storage=storage)
    except Exception:
        pass


def _cli(study_file: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(study_file), "--no-progress", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_three_concurrent_workers_lose_and_duplicate_nothing(tmp_path, study_name):
    target = 15
    p = tmp_path / "pg.toml"
    # real (short) training, so no process can finish the study before the others have started
    p.write_text(tiny_study_text(study_name, PG, trials=target, sampler="tpe", max_flops="50M", kind="proxy",
                                 epochs=1))
    procs = [_cli(p) for _ in range(3)]
    outs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    st = optuna.load_study(study_name=study_name, storage=PG_DRIVER)
    trials = st.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials)))          # none lost, none duplicated
    assert len({trial_id(t) for t in trials}) == len(trials)
    assert len(trials) == target                         # trial slots: exactly the study's count
    assert all(t.state.name == "COMPLETE" for t in trials)
    workers = {t.user_attrs[attrs.WORKER] for t in trials}
    assert len(workers) >= 2                             # the work was shared
    trained = [t.user_attrs[attrs.ARCH_ID] for t in trials if attrs.REUSED_FROM not in t.user_attrs]
    assert len(trained) == len(set(trained))             # no genome trained twice
    recs = load_trials(PG, study_name)
    assert len(recs) == len(trials) and all(r.genome and r.flops for r in recs)


def test_three_searches_with_two_workers_end_at_exactly_the_trial_count(tmp_path, study_name):
    """Issue 13.9: three ``nas search`` processes of a study with ``workers = 2`` and
    ``trials = 9`` on one PostgreSQL store (six workers) end with exactly 9 finished trials."""
    p = tmp_path / "slots.toml"
    text = tiny_study_text(study_name, PG, trials=9, sampler="random", max_flops="50M", kind="proxy", epochs=1)
    p.write_text(text.replace("seed = 0", "seed = 0\nworkers = 2"))
    procs = [_cli(p) for _ in range(3)]
    outs = [proc.communicate(timeout=600) for proc in procs]  # nine processes start torch: slow on 2 busy cores
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    st = optuna.load_study(study_name=study_name, storage=PG_DRIVER)
    trials = st.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(9))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs[attrs.WORKER] for t in trials}) >= 2


def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(tmp_path, study_name):
    p = tmp_path / "hb.toml"
    text = tiny_study_text(study_name, PG, trials=3, kind="proxy", epochs=6, max_flops="50M")
    p.write_text(text.replace("subset = 64", "subset = 256"))
    proc = _cli(p, "--heartbeat", "1")
    killed_number = None
    try:
        deadline = time.time() + 180
        while time.time() < deadline and killed_number is None:
            time.sleep(0.2)
            try:
                st = optuna.load_study(study_name=study_name, storage=PG_DRIVER)
            except Exception:
                continue
            ts = st.get_trials(deepcopy=False)
            done = [t for t in ts if t.state.name == "COMPLETE"]
            running = [t for t in ts if t.state.name == "RUNNING" and t.user_attrs.get(attrs.FEASIBLE)]
            if done and running:
                proc.send_signal(signal.SIGKILL)
                killed_number = running[0].number
        assert killed_number is not None, "never saw a finished and a running trial"
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    st = optuna.load_study(study_name=study_name, storage=PG_DRIVER)
    before = {t.number: t for t in st.get_trials() if t.state.name == "COMPLETE"}
    assert st.trials[killed_number].state.name == "RUNNING"  # left behind by the dead worker
    time.sleep(3.5)  # past the grace period (3 x 1 s)
    assert main(["search", str(p), "--no-progress", "--heartbeat", "1"]) == 0
    st = optuna.load_study(study_name=study_name, storage=PG_DRIVER)
    after = {t.number: t for t in st.get_trials()}
    for n, t in before.items():  # no finished trial lost or changed
        assert after[n].state.name == "COMPLETE" and after[n].values == t.values
    assert after[killed_number].state.name == "FAIL"
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].user_attrs[attrs.ARCH_ID] == after[killed_number].user_attrs[attrs.ARCH_ID]
    assert not [t for t in after.values() if t.state.name in ("RUNNING", "WAITING")]
    counted = [t for t in after.values() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 3
    rec = next(r for r in load_trials(PG, study_name) if r.number == killed_number)
    assert rec.failure == "worker lost (no heartbeat)"


def test_load_trials_leaves_no_connections_open(study_name):
    """Issue 20.8: a long-lived process calling ``nas.front.load_trials`` again and again holds
    a bounded number of PostgreSQL connections (one shared storage per URL per process), not
    two more per call until garbage collection."""
    import gc

    import sqlalchemy

    from nas.store import close_storages
    from nas.testing import make_tiny_study

    make_tiny_study(PG, study_name, trials=2)
    close_storages()  # start from none: what the search left pooled is closed
    probe = sqlalchemy.create_engine(PG_DRIVER, poolclass=sqlalchemy.pool.NullPool)
    mine = f"nas:{os.getpid()}"

    def count() -> int:
        with probe.connect() as c:
            return c.execute(sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                             {"a": mine}).scalar()

    gc.disable()  # what GC would close late must not hide a leak
    try:
        assert count() == 0
        assert len(load_trials(PG, study_name)) == 2
        after_one = count()
        for _ in range(12):
            assert len(load_trials(PG, study_name)) == 2
        after_13 = count()
    finally:
        gc.enable()
        close_storages()
    assert 1 <= after_one <= 2 and after_13 == after_one
    assert count() == 0  # close_storages closes them
    probe.dispose()
