"""The study store: Optuna's RDB storage over SQLAlchemy (SQLite by default, PostgreSQL for many
workers), opened with a heartbeat so trials left RUNNING by a killed worker are failed and
retried, plus the helpers that write the trial attributes named in ``nas.attrs``.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from evaluators.sql import fork_safe, normalize_url
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
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgres"):
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    return {}


def open_storage(url: str, *, heartbeat_s: float | None = HEARTBEAT_S, retry: bool = True) -> Any:
    """Open (and create the tables of) the RDB store at ``url``.

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
    if heartbeat_s:
        hb = max(1, int(round(heartbeat_s)))
        kw.update(heartbeat_interval=hb, grace_period=hb * GRACE_FACTOR)
        if retry:
            kw["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
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
        storage.set_trial_user_attr(trial_id, k, _jsonable(v))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # NaN is not valid JSON
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    try:
        return json.loads(json.dumps(v))
    except TypeError:
        return str(v)


class ArchClaims:
    """Who trains which genome: one row per (study, arch_id) in a ``nas_arch_claims`` table of
    the same database. ``INSERT`` is atomic on SQLite and PostgreSQL alike, so when two workers
    suggest the same genome at once exactly one trains it and the other reuses its result."""

    TABLE = "nas_arch_claims"

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._setup()

    def __getstate__(self) -> dict[str, Any]:  # picklable (Ray ships the searcher around)
        return {"storage": self.storage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.storage = state["storage"]
        self._setup()

    def _setup(self) -> None:
        import sqlalchemy as sa

        self.engine = self.storage.engine
        self.meta = sa.MetaData()
        self.table = sa.Table(
            self.TABLE, self.meta,
            sa.Column("study_name", sa.String(512), primary_key=True),
            sa.Column("arch_id", sa.String(64), primary_key=True),
            sa.Column("trial_number", sa.Integer, nullable=False),
        )
        for attempt in range(6):  # fresh databases: concurrent creators race (see open_storage)
            try:
                self.meta.create_all(self.engine, checkfirst=True)
                break
            except Exception as e:
                if attempt == 5 or not any(s in str(e).lower() for s in ("already exists", "duplicate key", "locked")):
                    raise
                import random
                import time

                time.sleep(0.2 + random.random())

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

    def forget_study(self, study_name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.study_name == study_name))


def weights_dir(study: Any) -> Path:
    """Where a study keeps proxy-trained weights: ``<store dir>/<name>_weights`` for SQLite,
    ``./studies/<name>_weights`` otherwise (put it on a shared disk for many machines)."""
    url = study.storage
    base = Path(url[len("sqlite:///"):]).resolve().parent if url.startswith("sqlite:///") else Path.cwd() / "studies"
    return base / f"{study.name}_weights"
