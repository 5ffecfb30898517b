"""The study store: Optuna's RDB storage over SQLAlchemy (SQLite by default, PostgreSQL for many
workers), opened with a heartbeat so trials left RUNNING by a killed worker are failed and
retried, plus the helpers that write the trial attributes named in ``nas.attrs``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from evaluators.sql import fork_safe, normalize_url
from nas import attrs
from nas.errors import NasError, did_you_mean
from nas.errors import first_line as _first_line

HEARTBEAT_S = 10           # a RUNNING trial's worker writes a heartbeat this often
GRACE_FACTOR = 3           # ... and is failed when none came for HEARTBEAT_S * GRACE_FACTOR
MAX_RETRY = 2              # a trial failed by heartbeat is re-run at most this often


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def check_url(url: str) -> str:
    """Validate a storage URL; make a SQLite file's directory. Returns the URL."""
    if not isinstance(url, str) or "://" not in url:
        raise NasError(f"storage must be a database URL like sqlite:///studies/x.db or "
                       f"postgresql://user@host:5432/db, got {url!r}")
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise NasError(f"storage scheme {scheme!r} is not supported; use sqlite:/// or postgresql://")
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if path and not path.startswith(":memory:"):
            parent = Path(path).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise NasError(f"cannot create the directory {str(parent)!r} for storage {url}: {e.strerror}") from None
    return url


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine arguments for a store URL. PostgreSQL connections carry
    ``application_name = "nas:<pid>"``, so ``pg_stat_activity`` shows whose they are."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgres"):
        return {"connect_args": {"connect_timeout": 5, "application_name": f"nas:{os.getpid()}"},
                "pool_pre_ping": True}
    return {}


# One storage per (URL, heartbeat setting) per process: every reader and writer of a store in
# this process shares its engine and connection pool (a long-lived process, a dashboard or a
# notebook calling nas.front.load_trials in a loop, holds a bounded number of connections).
_SHARED: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _sqlite_identity(url: str) -> Any:
    """The (device, inode) of a SQLite store's file (None for memory or a missing file): a
    file deleted and created again under the same name is another store."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _dispose_in_child() -> None:
    """After ``os.fork``: the child must not use (or close) the parent's pooled connections."""
    for _key, (storage, _ident) in list(_SHARED.items()):
        try:
            storage.engine.dispose(close=False)
        except Exception:
            pass
    _SHARED.clear()


def close_storages() -> None:
    """Dispose every storage this process shares (their connections close now)."""
    for storage, _ident in _SHARED.values():
        try:
            storage.engine.dispose()
        except Exception:
            pass
    _SHARED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_in_child)


def open_storage(url: str, *, heartbeat_s: float | None = HEARTBEAT_S, retry: bool = True) -> Any:
    """Open (and create the tables of) the RDB store at ``url``: one shared storage per URL
    and heartbeat setting per process (an in-memory SQLite URL always gets its own).

    With ``heartbeat_s``, RUNNING trials send a heartbeat; a trial without one for
    ``GRACE_FACTOR * heartbeat_s`` is failed by the next worker that starts a trial, and
    ``RetryFailedTrialCallback`` enqueues a retry with the same parameters (the same genome).

    Raises:
        NasError: the URL is malformed or the database cannot be reached (one line).
    """
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    check_url(url)
    shown, url = url, normalize_url(url)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by nas itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    kw: dict[str, Any] = {"engine_kwargs": engine_kwargs(url)}
    hb = max(1, int(round(heartbeat_s))) if heartbeat_s else None
    if hb:
        kw.update(heartbeat_interval=hb, grace_period=hb * GRACE_FACTOR)
        if retry:
            kw["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    memory = url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") == "sqlite:")
    key = (url, hb, bool(retry and hb), os.getpid())
    if not memory and key in _SHARED:
        storage, ident = _SHARED[key]
        if ident == _sqlite_identity(url):
            return storage
        storage.engine.dispose()  # the file was replaced: a new store under the same name
        del _SHARED[key]
    storage = None
    for attempt in range(6):
        try:
            storage = RDBStorage(url, **kw)
            break
        except Exception as e:  # sqlalchemy OperationalError, ImportError of a driver, ...
            # several workers creating the tables of a fresh database at once race on them:
            # the losers see "already exists"/"duplicate key"; the tables are there, try again
            text = str(e).lower()
            if attempt < 5 and ("already exists" in text or "duplicate key" in text or "locked" in text):
                import random
                import time

                time.sleep(0.2 + random.random())
                continue
            raise NasError(f"cannot open storage {redact(shown)}: {_first_line(e)}") from None
    if url.startswith("sqlite"):
        _sqlite_pragmas(storage.engine)
    fork_safe(storage.engine)  # a forked worker opens its own connections
    if not memory:
        _SHARED[key] = (storage, _sqlite_identity(url))
    return storage


def _sqlite_pragmas(engine: Any) -> None:
    """WAL journal (readers do not block the writer; survives in the file) and
    ``synchronous=NORMAL`` (fsync at checkpoints, not per commit): the per-trial store writes of
    a search stop waiting on the disk. A killed process loses nothing committed; a power cut can
    lose the last commits, never corrupt the file."""
    from sqlalchemy import event

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections made while creating the tables lack the pragmas


def study_names(storage: Any) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]


def require_study(storage: Any, name: str, url: str) -> None:
    """Raise ``NasError`` naming the studies that exist when ``name`` is not one of them."""
    names = study_names(storage)
    if name not in names:
        hint = did_you_mean(name, names)
        have = ", ".join(names) if names else "none"
        raise NasError(f"no study {name!r} in {redact(url)}{hint}; studies there: {have}")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``attention-nas <version>`` plus the git commit (and ``+dirty``) when known."""
    try:
        from importlib.metadata import version

        v = version("attention-nas")
    except Exception:
        from nas import __version__ as v
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        commit, dirty = "", ""
    return f"attention-nas {v}" + (f" ({commit}{'+dirty' if dirty else ''})" if commit else "")


def set_trial_attrs(storage: Any, trial_id: int, values: dict[str, Any]) -> None:
    """Write several trial user attributes (JSON-serialisable values) to the store."""
    for k, v in values.items():
        storage.set_trial_user_attr(trial_id, k, jsonable(v))


def jsonable(v: Any) -> Any:
    """``v`` as a JSON-ready value (NaN -> None, tuples -> lists, unknown objects -> str)."""
    if isinstance(v, float) and v != v:  # NaN is not valid JSON
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    try:
        return json.loads(json.dumps(v))
    except TypeError:
        return str(v)


_jsonable = jsonable  # the name other modules used before


class StoreTable:
    """A table of this project's own in the study's database, beside Optuna's: ``TABLE`` with
    the ``columns()`` a subclass declares (sqlalchemy ``Column``s), created on first use.
    Picklable by its storage (Ray ships the searcher and the trial step around)."""

    TABLE = ""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._setup()

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self.storage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.storage = state["storage"]
        self._setup()

    @staticmethod
    def columns() -> list[Any]:
        raise NotImplementedError

    def _setup(self) -> None:
        import sqlalchemy as sa

        self.engine = self.storage.engine
        self.meta = sa.MetaData()
        self.table = sa.Table(self.TABLE, self.meta, *self.columns())
        _create_tables(self.meta, self.engine)

    def forget_study(self, study_name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.study_name == study_name))


class ArchClaims(StoreTable):
    """Who trains which genome: one row per (study, arch_id) in a ``nas_arch_claims`` table of
    the same database. ``INSERT`` is atomic on SQLite and PostgreSQL alike, so when two workers
    suggest the same genome at once exactly one trains it and the other reuses its result."""

    TABLE = "nas_arch_claims"

    @staticmethod
    def columns() -> list[Any]:
        import sqlalchemy as sa

        return [sa.Column("study_name", sa.String(512), primary_key=True),
                sa.Column("arch_id", sa.String(64), primary_key=True),
                sa.Column("trial_number", sa.Integer, nullable=False)]

    def claim(self, study_name: str, arch_id: str, number: int) -> int:
        """Claim ``arch_id`` for trial ``number``; returns the owner's trial number."""
        import sqlalchemy as sa

        t = self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values(study_name=study_name, arch_id=arch_id, trial_number=number))
            return number
        except sa.exc.IntegrityError:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(t.c.trial_number).where(
                    (t.c.study_name == study_name) & (t.c.arch_id == arch_id))).first()
            return int(row[0]) if row else self.claim(study_name, arch_id, number)

    def take_over(self, study_name: str, arch_id: str, old: int, new: int) -> bool:
        """Move the claim from trial ``old`` (which died) to ``new``; True if this call won."""
        t = self.table
        with self.engine.begin() as conn:
            res = conn.execute(t.update().where((t.c.study_name == study_name) & (t.c.arch_id == arch_id)
                                                & (t.c.trial_number == old)).values(trial_number=new))
        return res.rowcount == 1


def _create_tables(meta: Any, engine: Any) -> None:
    """``meta.create_all`` that survives concurrent creators of a fresh database (see open_storage)."""
    for attempt in range(6):
        try:
            meta.create_all(engine, checkfirst=True)
            return
        except Exception as e:
            if attempt == 5 or not any(s in str(e).lower() for s in ("already exists", "duplicate key", "locked")):
                raise
            import random
            import time

            time.sleep(0.2 + random.random())


class TrialSlots:
    """A study's trial budget, shared by every worker: a worker takes a slot before it asks the
    study for a trial, so a study ends at exactly its ``trials`` count whatever the number of
    workers, processes and machines.

    One row per slot in a ``nas_trial_slots`` table of the same database (``ticket``, the trial
    ``number`` once asked, the taking ``owner`` host:pid and time). ``take`` runs under a lock
    row of ``nas_trial_slot_locks`` (a row lock on PostgreSQL, the write lock on SQLite), so
    takers of one study are serialised: a slot is given when the counted trials
    (``counted``) plus the slots in use are below the target. A slot is in use
    while its trial is unfinished (RUNNING or WAITING) or, before it is bound to a trial, while
    its owner lives; the slot of a trial that ended without counting (interrupted, or failed by
    heartbeat after its worker died) is free again.
    """

    TABLE, LOCKS = "nas_trial_slots", "nas_trial_slot_locks"
    UNBOUND_S = 600.0      # an unbound slot of another machine's worker counts this long

    def __init__(self, storage: Any) -> None:
        import sqlalchemy as sa

        self.storage = storage
        self.engine = storage.engine
        self.meta = sa.MetaData()
        self.table = sa.Table(
            self.TABLE, self.meta,
            sa.Column("study_name", sa.String(512), primary_key=True),
            sa.Column("ticket", sa.String(36), primary_key=True),
            sa.Column("trial_number", sa.Integer, nullable=True),
            sa.Column("owner", sa.String(300), nullable=False),
            sa.Column("taken_at", sa.Float, nullable=False),
        )
        self.locks = sa.Table(
            self.LOCKS, self.meta,
            sa.Column("study_name", sa.String(512), primary_key=True),
            sa.Column("n", sa.Integer, nullable=False),
        )
        _create_tables(self.meta, self.engine)
        self._lock_rows: set[str] = set()

    def take(self, study: Any, target: int, owner: str) -> str | None:
        """A slot (its ticket) for one more trial of ``study``, or None when the study holds or
        runs ``target`` trials. Fails stale trials first (Optuna's heartbeat check), so a dead
        worker's trial frees its slot."""
        import time
        import uuid

        import sqlalchemy as sa
        from optuna.storages import fail_stale_trials

        name, t, lk = study.study_name, self.table, self.locks
        if name not in self._lock_rows:
            try:
                with self.engine.begin() as conn:
                    conn.execute(lk.insert().values(study_name=name, n=0))
            except sa.exc.IntegrityError:
                pass
            self._lock_rows.add(name)
        fail_stale_trials(study)
        with self.engine.begin() as conn:
            conn.execute(lk.update().where(lk.c.study_name == name).values(n=lk.c.n + 1))  # the lock
            rows = conn.execute(sa.select(t.c.ticket, t.c.trial_number, t.c.owner, t.c.taken_at)
                                .where(t.c.study_name == name)).all()
            trials = study.get_trials(deepcopy=False)  # after the rows: a bound slot's trial is in it
            by_number = {tr.number: tr for tr in trials}
            done = sum(counted(tr) for tr in trials)
            live, stale = 0, []
            for ticket, number, who, taken_at in rows:
                if number is None:
                    in_use = _alive(who, taken_at, self.UNBOUND_S)
                else:
                    tr = by_number.get(number)
                    in_use = tr is not None and not tr.state.is_finished()
                if in_use:
                    live += 1
                else:
                    stale.append(ticket)
            if stale:
                conn.execute(t.delete().where((t.c.study_name == name) & t.c.ticket.in_(stale)))
            if done + live >= target:
                return None
            ticket = uuid.uuid4().hex
            conn.execute(t.insert().values(study_name=name, ticket=ticket, trial_number=None, owner=owner,
                                           taken_at=time.time()))
        return ticket

    def bind(self, study_name: str, ticket: str, number: int) -> None:
        """Record that slot ``ticket`` holds trial ``number``."""
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.update().where((t.c.study_name == study_name) & (t.c.ticket == ticket))
                         .values(trial_number=number))

    def release(self, study_name: str, ticket: str) -> None:
        """Give back slot ``ticket`` when no trial was asked for it (a bound slot needs no
        release: once its trial finished, ``take`` drops it and counts the trial by its state)."""
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where((t.c.study_name == study_name) & (t.c.ticket == ticket)))

    def forget_study(self, study_name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.study_name == study_name))
            conn.execute(self.locks.delete().where(self.locks.c.study_name == study_name))
        self._lock_rows.discard(study_name)


def _alive(owner: str, taken_at: float, unbound_s: float) -> bool:
    """Whether the worker ``host:pid`` that took a slot at ``taken_at`` may still bind it."""
    import socket
    import time

    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return time.time() - taken_at < unbound_s


def counted(t: Any) -> bool:
    """Whether a finished trial counts toward the study's trial budget: COMPLETE and PRUNED do,
    FAILED ones do when they failed on their own (not when a killed worker left them RUNNING,
    since those are retried, nor when interrupted)."""
    s = t.state.name
    if s in ("COMPLETE", "PRUNED"):
        return True
    if s == "FAIL":
        reason = t.user_attrs.get(attrs.FAILURE)
        return bool(reason) and reason != "interrupted"
    return False
