"""The dashboard's store reader: an Optuna RDB study store, read-only, -> ``nas.front.TrialRecord``s.

Reading is read-only by construction: a SQLite store is opened with ``mode=ro`` (SQLite itself
refuses writes, and a missing file is an error instead of a new empty store); PostgreSQL
sessions start with ``default_transaction_read_only``. Trials are read with five bulk
``SELECT``s over Optuna's RDB schema (an order of magnitude faster than Optuna's ORM for
thousands of trials) and turned into ``nas.front.TrialRecord`` by the same function Optuna's
trials go through (``nas.front.record_from_trial``); when the schema is not the one expected
the reader falls back to Optuna's own API. Finished trials are cached, so a live refresh
reads only new and still-running trials.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.sql import fork_safe
from nas import attrs as A
from nas import front as F
from nas.errors import StoreError, did_you_mean
from nas.errors import first_line as _first_line

_FINISHED = {"COMPLETE", "PRUNED", "FAIL"}

# --------------------------------------------------------------------------------------------
# opening the store read-only
# --------------------------------------------------------------------------------------------
def read_only_url(url: str) -> tuple[str, dict[str, Any]]:
    """``(sqlalchemy_url, engine_kwargs)`` that open ``url`` without the right to write.

    Raises:
        StoreError: a SQLite file that does not exist, or a URL that is not a database URL.
    """
    if not isinstance(url, str) or "://" not in url:
        raise StoreError(f"storage must be a database URL like sqlite:///studies/x.db, got {url!r}")
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path or path.startswith(":memory:") or path.startswith("file:"):
            raise StoreError(f"storage {url} is not a SQLite file the dashboard can read")
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise StoreError(f"no store at {p} (the file does not exist)")
        return f"sqlite:///file:{p}?mode=ro&uri=true", {"connect_args": {"timeout": 30}}
    if scheme in ("postgresql", "postgres"):
        from nas.store import normalize_url

        return normalize_url(url), {"connect_args": {"options": "-c default_transaction_read_only=on", "connect_timeout": 5},
                     "pool_pre_ping": True}
    return url, {}


def redact(url: str) -> str:
    from nas.store import redact as _redact

    return _redact(url)


@dataclass
class StudyInfo:
    """One study's header: objectives, spec, reference point, and what it holds."""

    name: str
    study_id: int
    directions: list[str]
    objectives: list[tuple[str, str]]              # [(name, direction)], study order
    user_attrs: dict[str, Any] = field(default_factory=dict)
    metric_names: list[str] | None = None           # Optuna's set_metric_names (optuna-dashboard reads it)
    n_trials: int = 0

    @property
    def spec(self) -> dict[str, Any]:
        raw = self.user_attrs.get(A.STUDY_SPEC)
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                return {}
        return raw if isinstance(raw, dict) else {}

    def _spec_int(self, key: str) -> int | None:
        """An integer setting of the stored study spec: its ``[data]`` table first, then the top."""
        spec = self.spec
        for holder in (spec.get("data") or {}, spec):
            v = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(v, int):
                return v
        return None

    @property
    def img_size(self) -> int | None:
        return self._spec_int("img_size")

    @property
    def num_classes(self) -> int | None:
        return self._spec_int("num_classes")


class Store:
    """A read-only view of an Optuna RDB store, with a per-study cache of finished trials."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.url = url
        ro_url, kw = read_only_url(url)
        try:
            self.engine = fork_safe(sa.create_engine(ro_url, **kw))
            with self.engine.connect() as c:
                tables = set(sa.inspect(c).get_table_names())
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"cannot reach the store {redact(url)}: {_first_line(e)}") from None
        need = {"studies", "trials", "trial_values", "trial_user_attributes", "trial_system_attributes",
                "study_directions", "study_user_attributes", "study_system_attributes"}
        if not need <= tables:
            raise StoreError(f"{redact(url)} is not an Optuna study store (tables missing: "
                             f"{', '.join(sorted(need - tables))})")
        self._cache: dict[str, _TrialCache] = {}
        self._lock = threading.Lock()

    # --- studies ---------------------------------------------------------------------------
    def study_names(self) -> list[str]:
        return [s.name for s in self.studies()]

    def studies(self) -> list[StudyInfo]:
        """Every study in the store, in creation order."""
        import sqlalchemy as sa

        with self._connect() as c:
            rows = c.execute(sa.text("SELECT study_id, study_name FROM studies ORDER BY study_id")).all()
            counts = dict(c.execute(sa.text("SELECT study_id, COUNT(*) FROM trials GROUP BY study_id")).all())
        return [self._info(sid, name, counts.get(sid, 0)) for sid, name in rows]

    def study(self, name: str) -> StudyInfo:
        """The study ``name``; a ``StoreError`` lists the studies there otherwise."""
        import sqlalchemy as sa

        with self._connect() as c:
            row = c.execute(sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}).first()
            if row is not None:
                n = c.execute(sa.text("SELECT COUNT(*) FROM trials WHERE study_id = :s"), {"s": row[0]}).scalar()
        if row is None:
            names = [s.name for s in self.studies()]
            raise StoreError(f"no study {name!r} in {redact(self.url)}{did_you_mean(name, names)}; studies there: "
                             f"{', '.join(names) if names else 'none'}")
        return self._info(row[0], name, int(n or 0))

    def _info(self, study_id: int, name: str, n_trials: int) -> StudyInfo:
        import sqlalchemy as sa

        with self._connect() as c:
            dirs = c.execute(sa.text("SELECT objective, direction FROM study_directions WHERE study_id = :s "
                                     "ORDER BY objective"), {"s": study_id}).all()
            ua = {k: json.loads(v) for k, v in c.execute(sa.text(
                "SELECT key, value_json FROM study_user_attributes WHERE study_id = :s"), {"s": study_id}).all()}
            sys_attrs = {k: json.loads(v) for k, v in c.execute(sa.text(
                "SELECT key, value_json FROM study_system_attributes WHERE study_id = :s"), {"s": study_id}).all()}
        directions = [str(d).split(".")[-1].lower() for _, d in dirs]
        metric_names = sys_attrs.get("study:metric_names")
        stored = ua.get(A.STUDY_OBJECTIVES)
        if stored and len(stored) == len(directions):
            objectives = [(o["name"], o["direction"]) for o in stored]
        elif metric_names and len(metric_names) == len(directions):
            objectives = list(zip(metric_names, directions))
        else:
            objectives = [(f"value{i}", d) for i, d in enumerate(directions)]
        return StudyInfo(name=name, study_id=study_id, directions=directions, objectives=objectives,
                         user_attrs=ua, metric_names=metric_names, n_trials=n_trials)

    def _connect(self):
        try:
            return self.engine.connect()
        except Exception as e:
            raise StoreError(f"cannot reach the store {redact(self.url)}: {_first_line(e)}") from None

    # --- trials ----------------------------------------------------------------------------
    def fingerprint(self, info: StudyInfo) -> tuple:
        """Cheap change detector: (count, max trial id, finished count, last completion)."""
        import sqlalchemy as sa

        with self._connect() as c:
            row = c.execute(sa.text(
                "SELECT COUNT(*), MAX(trial_id), SUM(CASE WHEN state IN ('COMPLETE','PRUNED','FAIL') THEN 1 ELSE 0 END),"
                " MAX(datetime_complete) FROM trials WHERE study_id = :s"), {"s": info.study_id}).first()
        return tuple(str(x) for x in row)

    def trials(self, info: StudyInfo) -> list[F.TrialRecord]:
        """Every trial of the study as ``nas.front.TrialRecord`` (finished ones cached)."""
        with self._lock:
            cache = self._cache.get(info.name)
            if cache is None or cache.study_id != info.study_id:
                cache = self._cache[info.name] = _TrialCache(info.study_id)
            names = [n for n, _ in info.objectives]
            try:
                return cache.refresh(self, names)
            except StoreError:
                raise
            except Exception as e:  # schema not as expected: read through Optuna instead
                if os.environ.get("NAS_DASHBOARD_STRICT_SQL"):
                    raise
                return load_trials_optuna(self.url, info.name, names, reason=_first_line(e))


class _Row:
    """The parts of an Optuna ``FrozenTrial`` that ``nas.front.record_from_trial`` reads."""

    __slots__ = ("number", "state", "values", "user_attrs", "datetime_start", "datetime_complete", "system_attrs",
                 "params")

    def __init__(self, number: int, state: str, start: Any, complete: Any) -> None:
        import optuna

        self.number = number
        self.state = optuna.trial.TrialState[state]
        self.values: list[float] | None = None
        self.user_attrs: dict[str, Any] = {}
        self.system_attrs: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.datetime_start = _as_dt(start)
        self.datetime_complete = _as_dt(complete)


def _as_dt(v: Any) -> _dt.datetime | None:
    if v is None or isinstance(v, _dt.datetime):
        return v
    return _dt.datetime.fromisoformat(str(v))


_VALUE_TYPES = {"FINITE": None, "INF_POS": math.inf, "INF_NEG": -math.inf}


class _TrialCache:
    def __init__(self, study_id: int) -> None:
        self.study_id = study_id
        self.finished: dict[int, tuple[F.TrialRecord, dict[str, Any]]] = {}  # trial_id -> (record, extras)
        self.max_id = -1

    def refresh(self, store: Store, names: list[str]) -> list[F.TrialRecord]:
        import sqlalchemy as sa
        from optuna.distributions import json_to_distribution

        # re-read: trials newer than the last seen and those not finished when last seen
        with store._connect() as c:
            rows = c.execute(sa.text(
                "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
                "WHERE study_id = :s ORDER BY number"), {"s": self.study_id}).all()
            todo = {r[0] for r in rows if r[0] not in self.finished}
            by_id: dict[int, _Row] = {r[0]: _Row(r[1], r[2], r[3], r[4]) for r in rows if r[0] in todo}
            if todo:
                lo = min(todo)
                q = ("SELECT a.trial_id, {cols} FROM {table} a JOIN trials t ON t.trial_id = a.trial_id "
                     "WHERE t.study_id = :s AND a.trial_id >= :lo")
                p = {"s": self.study_id, "lo": lo}
                vals: dict[int, dict[int, float]] = {}
                for tid, obj, value, vtype in c.execute(sa.text(q.format(
                        cols="a.objective, a.value, a.value_type", table="trial_values")), p):
                    if tid in by_id:
                        inf = _VALUE_TYPES.get(str(vtype).split(".")[-1])
                        vals.setdefault(tid, {})[obj] = inf if inf is not None else float(value)
                for tid, d in vals.items():
                    by_id[tid].values = [d[i] for i in sorted(d)]
                for table, slot in (("trial_user_attributes", "user_attrs"),
                                    ("trial_system_attributes", "system_attrs")):
                    got = [r for r in c.execute(sa.text(q.format(cols="a.key, a.value_json", table=table)), p).all()
                           if r[0] in by_id]
                    # one json.loads over all values: a C loop instead of 100k Python calls
                    decoded = json.loads("[" + ",".join(r[2] for r in got) + "]") if got else []
                    for (tid, key, _), v in zip(got, decoded):
                        getattr(by_id[tid], slot)[key] = v
                dist = functools.lru_cache(maxsize=None)(json_to_distribution)
                for tid, pname, pval, dj in c.execute(sa.text(q.format(
                        cols="a.param_name, a.param_value, a.distribution_json", table="trial_params")), p):
                    if tid in by_id:
                        by_id[tid].params[pname] = dist(dj).to_external_repr(pval)
        out = []
        for r in rows:
            tid = r[0]
            if tid in self.finished:
                out.append(self.finished[tid][0])
                continue
            row = by_id[tid]
            rec = F.record_from_trial(row, names)
            _attach_extras(rec, row.system_attrs, row.params)
            if r[2] in _FINISHED:
                self.finished[tid] = (rec, {})
            out.append(rec)
        return out


def _attach_extras(rec: F.TrialRecord, system_attrs: dict[str, Any], params: dict[str, Any]) -> None:
    """Constraint values Optuna keeps as system attributes, and the sampled parameters."""
    from optuna.study._constrained_optimization import _get_constraints_from_system_attrs

    rec.optuna_constraints = _get_constraints_from_system_attrs(system_attrs)  # type: ignore[attr-defined]
    rec.optuna_params = dict(params)  # type: ignore[attr-defined]


def load_trials_optuna(url: str, study_name: str, names: Sequence[str], *, reason: str = "") -> list[F.TrialRecord]:
    """The same records through Optuna's API (the fallback reader; slower for big studies)."""
    import optuna

    ro_url, kw = read_only_url(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(ro_url, engine_kwargs=kw, skip_table_creation=True,
                                             skip_compatibility_check=True)
        study = optuna.load_study(study_name=study_name, storage=storage)
    except Exception as e:
        raise StoreError(f"cannot read study {study_name!r} from {redact(url)}: {_first_line(e)}"
                         + (f" (fast reader: {reason})" if reason else "")) from None
    out = []
    for t in study.get_trials(deepcopy=False):
        rec = F.record_from_trial(t, list(names))
        _attach_extras(rec, t.system_attrs, t.params)
        out.append(rec)
    return out


