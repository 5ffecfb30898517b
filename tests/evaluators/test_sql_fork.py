"""Engines are safe across ``os.fork`` (issue 20.9), on a real PostgreSQL server.

A ``LatencyCache`` (or a study store) used in a parent and then in forked children used to give
``DatabaseError``s there (``PGRES_TUPLES_OK and no message``, ``RELEASE SAVEPOINT can only be used in
transaction blocks``) or hang: parent and children talked over the parent's pooled sockets.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from evaluators.latency import LatencyCache, LatencyResult
from evaluators.sql import fork_safe, normalize_url
from operators.errors import NasError

PG_URL = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CHILDREN, ROUNDS = 4, 15


def _result(i: int) -> LatencyResult:
    return LatencyResult(1.0 + i, 0.1, 1.0, 0.9, 3, 1, arch_id=f"arch{i}", device="cpu", device_name="test cpu",
                         batch=1, dtype="float32", img_size=32, memory_format="contiguous", threads=1,
                         torch_version="t", clock="wall")


def _key(i: int) -> dict:
    r = _result(i)
    return {k: getattr(r, k) for k in LatencyCache._KEY}


def _run_children(work, n: int = CHILDREN, timeout_s: float = 90.0) -> list[int]:
    """Fork ``n`` children running ``work(i)`` (an exception or a hang fails the child); their exit codes."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                signal.alarm(int(timeout_s))  # a child stuck on a shared socket dies instead of hanging
                work(i)
                code = 0
            except BaseException as e:  # noqa: BLE001 - reported through the exit code and stderr
                os.write(2, f"child {i}: {type(e).__name__}: {str(e).splitlines()[0][:300]}\n".encode())
            finally:
                os._exit(code)
        pids.append(pid)
    codes, deadline = {}, time.monotonic() + timeout_s + 10
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == pid:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for pid in pids:
        if pid not in codes:  # still running after the deadline: a hang
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            codes[pid] = -9
    return [codes[p] for p in pids]


@pytest.fixture
def pg_cache():
    try:
        cache = LatencyCache(PG_URL, table=f"test_{uuid.uuid4().hex[:10]}_fork")
    except NasError as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    yield cache
    cache.drop()


def test_latency_cache_used_in_parent_then_in_forked_children(pg_cache):
    cache = pg_cache
    cache.put(_result(0))
    assert cache.get(**_key(0)).median_ms == 1.0  # the parent now holds a pooled connection

    def work(child: int) -> None:
        for j in range(ROUNDS):
            i = 100 * (child + 1) + j
            cache.put(_result(i))
            assert cache.get(**_key(0)).median_ms == 1.0
            assert cache.get(**_key(i)).median_ms == 1.0 + i

    assert _run_children(work) == [0] * CHILDREN
    # the parent's own connections survived its children
    assert cache.get(**_key(0)).median_ms == 1.0
    assert len(cache) == 1 + CHILDREN * ROUNDS
    assert all(cache.get(**_key(100 * (c + 1) + j)) is not None for c in range(CHILDREN) for j in range(ROUNDS))


def test_study_store_used_in_parent_then_in_forked_children():
    import optuna

    from nas.store import open_storage

    try:
        storage = open_storage(PG_URL, heartbeat_s=None)
    except NasError as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    name = f"test_fork_{uuid.uuid4().hex[:10]}"
    study = optuna.create_study(study_name=name, storage=storage)
    try:
        study.tell(study.ask(), 0.0)  # the parent has used (and pooled) a connection

        def work(child: int) -> None:
            for j in range(5):
                study.tell(study.ask(), float(child * 10 + j))
            assert len(study.get_trials(deepcopy=False)) >= 6

        assert _run_children(work) == [0] * CHILDREN
        values = sorted(t.value for t in study.get_trials(deepcopy=False))
        assert values == sorted([0.0] + [float(c * 10 + j) for c in range(CHILDREN) for j in range(5)])
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def test_fork_safe_engine_forgets_the_parents_connections(tmp_path):
    """The child's pool starts empty (it opens its own connection); the parent's stays in use."""
    import sqlalchemy as sa

    engine = fork_safe(sa.create_engine(normalize_url(f"sqlite:///{tmp_path / 'x.db'}")))
    with engine.connect() as c:
        c.execute(sa.text("select 1"))
    parent_pool = engine.pool
    r, w = os.pipe()

    def work(_child: int) -> None:
        same = engine.pool is parent_pool
        with engine.connect() as c:
            c.execute(sa.text("select 1"))
        os.write(w, b"same" if same else b"new")

    assert _run_children(work, n=1) == [0]
    os.close(w)
    assert os.read(r, 16) == b"new"
    os.close(r)
    assert engine.pool is parent_pool and engine.pool.checkedin() == 1
