"""The dashboard's data layer: the study store -> plain records (no drawing here).

Reading is read-only by construction: a SQLite store is opened with ``mode=ro`` (SQLite itself
refuses writes, and a missing file is an error instead of a new empty store); PostgreSQL
sessions start with ``default_transaction_read_only``. Trials are read with five bulk
``SELECT``s over Optuna's RDB schema (an order of magnitude faster than Optuna's ORM for
thousands of trials) and turned into ``nas.front.TrialRecord`` by the same function Optuna's
trials go through (``nas.front.record_from_trial``); when the schema is not the one expected
the reader falls back to Optuna's own API. Finished trials are cached, so a live refresh
reads only new and still-running trials.

The front, its hypervolume and the eligibility rules (COMPLETE, feasible, full budget, one
per genome) are ``nas.front``'s; this module adds what the dashboard shows around them.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas import attrs as A
from nas import front as F
from nas.errors import NasError

# the metrics the page can put on an axis, with the direction that is better
AXES: dict[str, str] = {"accuracy": "maximize", "flops": "minimize", "latency_ms": "minimize", "params": "minimize"}
AXIS_LABELS = {"accuracy": "accuracy (top-1)", "flops": "FLOPs (MACs)", "latency_ms": "latency (ms)",
               "params": "parameters"}
DEFAULT_TIMM_REFERENCES = ("resnet18", "resnet50", "mobilenetv3_large_100", "efficientnet_b0", "convnext_tiny")
_FINISHED = {"COMPLETE", "PRUNED", "FAIL"}


class StoreError(NasError):
    """The store cannot be read (unreachable, not an Optuna store, unknown study)."""


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


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


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
            self.engine = sa.create_engine(ro_url, **kw)
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
        import difflib

        import sqlalchemy as sa

        with self._connect() as c:
            row = c.execute(sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}).first()
            if row is not None:
                n = c.execute(sa.text("SELECT COUNT(*) FROM trials WHERE study_id = :s"), {"s": row[0]}).scalar()
        if row is None:
            names = [s.name for s in self.studies()]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StoreError(f"no study {name!r} in {redact(self.url)}{hint}; studies there: "
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
    from nas.optuna_internals import constraints_from_system_attrs

    rec.optuna_constraints = constraints_from_system_attrs(system_attrs)  # type: ignore[attr-defined]
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
    try:
        for t in study.get_trials(deepcopy=False):
            rec = F.record_from_trial(t, list(names))
            _attach_extras(rec, t.system_attrs, t.params)
            out.append(rec)
    finally:
        storage.engine.dispose()  # one storage per call: close its connections now, not at GC
    return out


# --------------------------------------------------------------------------------------------
# records the page draws
# --------------------------------------------------------------------------------------------
def genome_facets(genome: str | None) -> dict[str, Any]:
    """Stem, position encodings, mixers and shape of a genome JSON (empty when absent)."""
    if not genome:
        return {}
    return _facets(genome)


@functools.lru_cache(maxsize=65536)
def _facets(genome: str) -> dict[str, Any]:
    try:
        g = json.loads(genome)
        stages = g["stages"]
        stem = g["stem"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return {}
    mixers = [s.get("mixer", "?") for s in stages]
    pos = sorted({s.get("pos", "none") for s in stages})
    n = len(stages)
    return {
        "stem": f"{stem.get('kind', '?')}{stem.get('patch_size', '')}",
        "pos": "+".join(pos),
        "pos_set": pos,
        "mixers": sorted(set(mixers)),
        "mixer": "+".join(dict.fromkeys(mixers)),
        "shape": "isotropic" if n == 1 else f"pyramid-{n}",
        "depths": [s.get("depth") for s in stages],
        "dims": [s.get("dim") for s in stages],
        "stage_mixers": mixers,
    }


def metric(rec: F.TrialRecord, name: str) -> float | None:
    """A value for an axis: the objective value of that name, else the attribute."""
    v = rec.metric(name)
    if v is None and name == "accuracy" and rec.accuracy_per_epoch:
        return None
    return v


def feasibility(rec: F.TrialRecord) -> bool | None:
    """The store's ``feasible`` attribute, else Optuna's constraint values (<= 0 all met)."""
    if isinstance(rec.feasible, bool):
        return rec.feasible
    cons = getattr(rec, "optuna_constraints", None) or rec.constraints
    if cons:
        return all(float(v) <= 0 for v in cons.values())
    return None


@dataclass
class StudyData:
    """Everything the page shows about one study, as plain values."""

    info: StudyInfo
    records: list[F.TrialRecord]
    rows: list[dict[str, Any]]               # one per trial, JSON-friendly (table + plots)
    front: list[int]                         # trial numbers on the study's Pareto front
    fingerprint: tuple = ()
    loaded_at: float = 0.0
    pair_fronts: dict[tuple[str, str], list[F.TrialRecord]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_number = {r.number: r for r in self.records}

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return self.info.objectives

    def row(self, number: int) -> dict[str, Any] | None:
        for r in self.rows:
            if r["number"] == number:
                return r
        return None

    def record(self, number: int) -> F.TrialRecord | None:
        return self._by_number.get(number)


def trial_rows(records: Sequence[F.TrialRecord], objectives: Sequence[tuple[str, str]],
               front_numbers: set[int], study_start: _dt.datetime | None = None) -> list[dict[str, Any]]:
    """One JSON-friendly row per trial with its category: ``front``, ``dominated`` (feasible,
    complete, not on the front), ``infeasible``, ``running``, ``pruned``, ``failed``, or
    ``excluded`` (complete and feasible but not eligible: stopped early or a repeated genome)."""
    eligible = {r.number for r in F.eligible(records, objectives)}
    out = []
    for r in records:
        feas = feasibility(r)
        if feas is False and r.state in ("COMPLETE", "PRUNED"):
            cat = "infeasible"  # over budget: stopped before training, or trained and told so
        elif r.state == "COMPLETE":
            cat = "front" if r.number in front_numbers else ("dominated" if r.number in eligible else "excluded")
        else:
            cat = {"RUNNING": "running", "WAITING": "running", "PRUNED": "pruned", "FAIL": "failed"}.get(r.state,
                                                                                                        r.state.lower())
        facets = genome_facets(r.genome)
        done = _as_dt(r.datetime_complete)
        cons = getattr(r, "optuna_constraints", None) or r.constraints
        row = {
            "number": r.number, "state": r.state, "category": cat,
            "feasible": "yes" if feas else ("no" if feas is False else "?"),
            "violation": sum(max(0.0, float(v)) for v in cons.values()) if cons else 0.0,
            # an over-budget trial is told accuracy 0 without training: no accuracy to show
            "accuracy": r.accuracy if r.accuracy is not None else (r.metric("accuracy") if feas is not False else None),
            "flops": r.metric("flops"), "params": r.metric("params"),
            "latency_ms": r.metric("latency_ms"),
            "mixer": facets.get("mixer"), "pos": facets.get("pos"), "stem": facets.get("stem"),
            "shape": facets.get("shape"), "summary": r.summary, "arch_id": (r.arch_id or "")[:10],
            "epochs": r.epochs, "elapsed_s": (done - study_start).total_seconds() if done and study_start else None,
            "complete": r.datetime_complete, "failure": r.failure,
        }
        for name, _ in objectives:
            if name not in row:
                row[name] = r.metric(name)
        out.append(row)
    return out


def load_study_data(store: Store, study_name: str) -> StudyData:
    """Read a study and derive its rows and front (``nas.front.pareto_front``)."""
    info = store.study(study_name)
    fp = store.fingerprint(info)
    records = store.trials(info)
    front = F.pareto_front(records, info.objectives) if records else []
    starts = [_as_dt(r.datetime_start) for r in records if r.datetime_start]
    start = min(starts) if starts else None
    numbers = {r.number for r in front}
    rows = trial_rows(records, info.objectives, numbers, start)
    return StudyData(info=info, records=records, rows=rows, front=[r.number for r in front], fingerprint=fp,
                     loaded_at=time.time())


def front_2d(records: Sequence[F.TrialRecord], x: str, y: str, *,
             study: StudyData | None = None) -> list[dict[str, Any]]:
    """The Pareto front for the pair ``(x, y)`` (directions from ``AXES``), sorted by ``x``.

    With ``study``, reuses its front when the pair is the study's two objectives and caches
    other pairs on it (the front of 5,000 trials takes a noticeable fraction of a second)."""
    objs = [(x, AXES.get(x, "minimize")), (y, AXES.get(y, "minimize"))]
    if x == y:
        return []
    if study is not None:
        key = (x, y)
        if key not in study.pair_fronts:
            if sorted(objs) == sorted(study.objectives):
                pts = [study.record(n) for n in study.front]
            else:
                pts = F.pareto_front(records, objs)
            study.pair_fronts[key] = pts
        pts = study.pair_fronts[key]
    else:
        pts = F.pareto_front(records, objs)
    return sorted(({"number": r.number, x: r.metric(x), y: r.metric(y)} for r in pts), key=lambda d: d[x])


def reference_point(data: StudyData) -> list[float]:
    return F.reference_point_for(data.info.user_attrs, data.records, data.objectives)


def hypervolume_history(data: StudyData) -> dict[str, list[dict[str, Any]]]:
    """Hypervolume of the front after each eligible trial, by trial number and by wall time.

    Same front rules and hypervolume as ``nas.front`` (checked against ``nas.front.hypervolume``
    on prefixes in the tests); kept incremental: a trial that is dominated by the current front
    leaves the hypervolume as it was.
    """
    objs = data.objectives
    ref = reference_point(data)
    ref_min = [-v if d == "maximize" else v for v, (_, d) in zip(ref, objs)]
    elig = F.eligible(data.records, objs)
    by_number = _hv_sweep(sorted(elig, key=lambda r: r.number), objs, ref_min)
    timed = [r for r in elig if r.datetime_complete]
    starts = [_as_dt(r.datetime_start) for r in data.records if r.datetime_start]
    t0 = min(starts) if starts else None
    by_time = _hv_sweep(sorted(timed, key=lambda r: (r.datetime_complete, r.number)), objs, ref_min)
    for p in by_time:
        p["elapsed_s"] = (_as_dt(p.pop("complete")) - t0).total_seconds() if t0 else None
    for p in by_number:
        p.pop("complete", None)
    return {"by_trial": by_number, "by_time": by_time, "reference_point": ref}


def _hv_sweep(records: Sequence[F.TrialRecord], objs: Sequence[tuple[str, str]], ref_min: Sequence[float]):
    front: list[tuple[float, ...]] = []
    hv = 0.0
    out = []
    for r in records:
        p = tuple(-r.metric(n) if d == "maximize" else r.metric(n) for n, d in objs)
        if not any(all(a <= b for a, b in zip(q, p)) for q in front):
            front = [q for q in front if not all(a <= b for a, b in zip(p, q))] + [p]
            hv = F.hypervolume_points(front, ref_min)
        out.append({"trial": r.number, "hypervolume": hv, "complete": r.datetime_complete})
    return out


COMPOSITION_FACETS = ("mixer", "pos", "stem", "shape")


def composition(data: StudyData) -> list[dict[str, Any]]:
    """How often each mixer, position encoding, stem and shape appears on the front vs. among
    all evaluated trials (COMPLETE ones with a genome). A hybrid counts once per mixer it uses."""
    front = set(data.front)
    done = [r for r in data.records if r.state == "COMPLETE" and r.genome]
    n_all, n_front = len(done), sum(1 for r in done if r.number in front)
    counts: dict[str, tuple[Counter, Counter]] = {f: (Counter(), Counter()) for f in COMPOSITION_FACETS}
    for r in done:
        f = genome_facets(r.genome)
        if not f:
            continue
        keys = {"mixer": f["mixers"], "pos": f["pos_set"], "stem": [f["stem"]], "shape": [f["shape"]]}
        for facet, values in keys.items():
            for v in values:
                counts[facet][0][v] += 1
                if r.number in front:
                    counts[facet][1][v] += 1
    out = []
    for facet in COMPOSITION_FACETS:
        allc, frontc = counts[facet]
        for v, n in allc.most_common():
            out.append({"facet": facet, "value": v, "all": n, "front": frontc.get(v, 0),
                        "all_share": n / n_all if n_all else 0.0,
                        "front_share": frontc.get(v, 0) / n_front if n_front else 0.0})
    return out


def param_importance(data: StudyData, *, max_trials: int = 500, seed: int = 0,
                     evaluator: str = "fanova") -> list[dict[str, Any]]:
    """Optuna's importance of each sampled parameter, per objective, over the eligible trials
    (at most the latest ``max_trials``): ``"fanova"`` (Optuna's default evaluator, with a
    16-tree, depth-8 forest so 500 trials take seconds, not a minute) or ``"ped_anova"``
    (faster still). Built on an in-memory copy of those trials, so the store is not read
    again. Empty when there are fewer than two such trials or no parameter varies."""
    import optuna
    from optuna.importance import (
        FanovaImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )

    def make():
        if evaluator == "ped_anova":
            return PedAnovaImportanceEvaluator()
        if evaluator == "fanova":
            return FanovaImportanceEvaluator(n_trees=16, max_depth=8, seed=seed)
        raise ValueError(f"importance evaluator {evaluator!r}: use 'fanova' or 'ped_anova'")

    objs = data.objectives
    elig = [r for r in F.eligible(data.records, objs) if getattr(r, "optuna_params", None)]
    elig = elig[-max_trials:]
    if len(elig) < 2:
        return []
    dists = _distributions(elig)
    if not dists:
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[d for _, d in objs])
    trials = []
    for r in elig:
        params = {k: v for k, v in r.optuna_params.items() if k in dists}
        trials.append(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                values=[r.metric(n) for n, _ in objs]))
    study.add_trials(trials)
    out = []
    for i, (name, _) in enumerate(objs):
        try:
            imp = get_param_importances(study, evaluator=make(),
                                        target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError):
            continue
        for p, v in imp.items():
            out.append({"objective": name, "param": p, "importance": float(v)})
    return out


def _distributions(records: Sequence[F.TrialRecord]) -> dict[str, Any]:
    """Parameters present in every record, with a distribution covering all their values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    keys = set.intersection(*(set(r.optuna_params) for r in records))
    out: dict[str, Any] = {}
    for k in sorted(keys):
        vals = [r.optuna_params[k] for r in records]
        if len({json.dumps(v, sort_keys=True, default=str) for v in vals}) < 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = FloatDistribution(float(min(vals)), float(max(vals)))
        else:
            choices = tuple(dict.fromkeys(v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
                                          for v in vals))
            out[k] = CategoricalDistribution(choices)
    for r in records:  # categorical values that were not hashable primitives become strings
        for k, d in out.items():
            if isinstance(d, CategoricalDistribution) and r.optuna_params[k] not in d.choices:
                r.optuna_params[k] = str(r.optuna_params[k])
    return out


# --------------------------------------------------------------------------------------------
# architecture detail
# --------------------------------------------------------------------------------------------
def architecture(rec: F.TrialRecord, *, study_name: str, storage_url: str | None = None,
                 compute: bool = False, img_size: int | None = None,
                 measure_latency: bool = False) -> dict[str, Any]:
    """Stages (mixer, depth, width), per-stage FLOPs/params (stored, or counted with
    ``evaluators.count_flops`` when ``compute`` and absent), per-stage CPU latency when
    ``measure_latency`` (the store keeps only the whole model's), the learning curve, and the
    ``nas export`` command."""
    facets = genome_facets(rec.genome)
    ua = rec.user_attrs
    n = len(facets.get("depths") or [])
    flops_ps = ua.get(A.FLOPS_PER_STAGE)
    params_ps = ua.get(A.PARAMS_PER_STAGE)
    source = "store"
    if (flops_ps is None or params_ps is None) and compute and rec.genome:
        flops_ps, params_ps = stage_costs(rec.genome, img_size)
        source = "computed"
    lat_ps = stage_latency(rec.genome, img_size) if measure_latency and rec.genome else None
    stages = []
    for i in range(n):
        stages.append({
            "stage": i, "mixer": facets["stage_mixers"][i], "depth": facets["depths"][i], "dim": facets["dims"][i],
            "flops": flops_ps[i] if flops_ps and i < len(flops_ps) else None,
            "params": params_ps[i] if params_ps and i < len(params_ps) else None,
            "latency_ms": lat_ps[i] if lat_ps and i < len(lat_ps) else None,
        })
    storage = f" --storage {storage_url}" if storage_url else ""
    return {
        "number": rec.number, "summary": rec.summary, "arch_id": rec.arch_id, "stem": facets.get("stem"),
        "shape": facets.get("shape"), "stages": stages, "cost_source": source if flops_ps else None,
        "accuracy_per_epoch": list(rec.accuracy_per_epoch or []),
        "loss_per_epoch": list(ua.get(A.LOSS_PER_EPOCH) or []),
        "values": dict(rec.values), "flops": rec.flops, "params": rec.params, "latency_ms": rec.latency_ms,
        "latency_device": rec.latency_device, "state": rec.state, "feasible": feasibility(rec),
        "constraints": getattr(rec, "optuna_constraints", None) or rec.constraints,
        "export_command": f"nas export {study_name}{storage} --trial {rec.number} --out exported/{study_name}-{rec.number}",
        "genome": rec.genome,
    }


def stage_costs(genome: str, img_size: int | None = None) -> tuple[list[int], list[int]]:
    """Per-stage MACs and parameters of a genome, counted with the project's cost counter."""
    import torch

    from evaluators import count_flops, count_params
    from search_space import ArchSpec, build_model

    spec = ArchSpec.from_json(genome)
    size = img_size or spec.img_size
    with torch.no_grad():
        model = build_model(spec).eval()
        fc = count_flops(model, input_size=(spec.in_chans, size, size))
    flops = [fc.module(f"stages.{i}") for i in range(len(model.stages))]
    params = [int(count_params(stage)) for stage in model.stages]
    return flops, params


def stage_latency(genome: str, img_size: int | None = None, *, repeats: int = 5, warmup: int = 2,
                  threads: int = 1) -> list[float]:
    """Median CPU latency (ms, batch 1, float32) of each stage of a genome, measured on demand
    by running the stem and then each stage in turn on the previous stage's output."""
    import statistics

    import torch

    from search_space import ArchSpec, build_model

    spec = ArchSpec.from_json(genome)
    size = img_size or spec.img_size
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            model = build_model(spec).eval()
            x = model.stem(torch.randn(1, spec.in_chans, size, size))  # (B, H/p, W/p, C0)
            out = []
            for stage in model.stages:
                times = []
                for i in range(warmup + repeats):
                    t0 = time.perf_counter()
                    y = stage(x)
                    if i >= warmup:
                        times.append((time.perf_counter() - t0) * 1e3)
                out.append(statistics.median(times))
                x = y
    finally:
        torch.set_num_threads(old)
    return out


# --------------------------------------------------------------------------------------------
# reference models: presets and timm, on the study's axes
# --------------------------------------------------------------------------------------------
_REF_LOCK = threading.Lock()
_REF_MEMO: dict[str, dict[str, Any]] = {}


def _ref_cache_path() -> Path:
    base = os.environ.get("NAS_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                           os.path.expanduser("~/.cache"), "attention-nas")
    return Path(base) / "reference_costs.json"


def reference_cost(name: str, img_size: int, num_classes: int = 1000) -> dict[str, Any]:
    """MACs and parameters of ``preset:NAME`` or ``timm:MODEL`` at ``img_size``, counted with
    ``evaluators.count_flops`` (the same counter as the study's trials). Cached per
    (model, img_size, num_classes) in memory and in ``~/.cache/attention-nas`` (never in the
    store): counting a timm model takes seconds."""
    key = f"{name}@{img_size}/{num_classes}"
    with _REF_LOCK:
        if key in _REF_MEMO:
            return _REF_MEMO[key]
        path = _ref_cache_path()
        try:
            disk = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            disk = {}
        if key in disk:
            _REF_MEMO[key] = disk[key]
            return disk[key]
    cost = _count_reference(name, img_size, num_classes)
    with _REF_LOCK:
        _REF_MEMO[key] = cost
        try:
            path = _ref_cache_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                disk = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                disk = {}
            disk[key] = cost
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(disk, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass
    return cost


def _count_reference(name: str, img_size: int, num_classes: int) -> dict[str, Any]:
    import torch

    from evaluators import count_flops, count_params

    kind, _, model_name = name.partition(":")
    try:
        with torch.no_grad():
            if kind == "preset":
                from search_space import build_model, get_preset

                spec = get_preset(model_name).replace(img_size=img_size, num_classes=num_classes)
                model = build_model(spec)
            elif kind == "timm":
                import timm

                try:
                    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, img_size=img_size)
                except TypeError:
                    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
            else:
                return {"name": name, "error": f"reference {name!r}: use preset:NAME or timm:MODEL"}
            model.eval()
            fc = count_flops(model, input_size=(3, img_size, img_size))
        return {"name": name, "flops": int(fc), "params": int(count_params(model)), "img_size": img_size}
    except Exception as e:  # a model that does not run at this size: shown as unavailable
        return {"name": name, "error": _first_line(e)}


def default_references(info: StudyInfo) -> list[str]:
    """The presets the study names (``[presets] names``), else every preset, plus a few timm models."""
    spec = info.spec
    names = list(((spec.get("presets") or {}).get("names")) or spec.get("references") or [])
    out = [n if ":" in n else f"preset:{n}" for n in names]
    if not out:
        from search_space import PRESETS

        out = [f"preset:{n}" for n in PRESETS]
    return out + [f"timm:{m}" for m in DEFAULT_TIMM_REFERENCES]


def reference_points(info: StudyInfo, records: Sequence[F.TrialRecord], names: Sequence[str], *,
                     compute: bool = True) -> list[dict[str, Any]]:
    """Reference models on the study's axes: costs at the study's resolution (from the study's
    ``presets`` attribute when the search stored them, else counted), accuracy only where the
    model was evaluated with the study's recipe (the ``presets`` attribute's ``accuracy``, or a
    COMPLETE trial of the study with the same genome)."""
    img = info.img_size or 224
    ncls = info.num_classes or 1000
    stored = info.user_attrs.get(A.STUDY_PRESETS) or {}
    by_arch = {r.arch_id: r for r in records if r.arch_id and r.state == "COMPLETE" and r.accuracy is not None}
    out = []
    for name in names:
        kind, _, model = name.partition(":")
        entry: dict[str, Any] = {"name": name, "label": model or name, "kind": kind, "accuracy": None,
                                 "flops": None, "params": None, "latency_ms": None}
        s = stored.get(model) if kind == "preset" else None
        if isinstance(s, dict) and s.get("flops") is not None:
            entry.update(flops=s.get("flops"), params=s.get("params"), source="study")
            if s.get("accuracy") is not None:
                entry["accuracy"] = s["accuracy"]
            if s.get("arch_id") in by_arch and entry["accuracy"] is None:
                entry["accuracy"] = by_arch[s["arch_id"]].accuracy
        elif compute:
            c = reference_cost(name, img, ncls)
            if "error" in c:
                entry["error"] = c["error"]
            else:
                entry.update(flops=c["flops"], params=c["params"], source="counted")
            if kind == "preset":
                try:
                    from search_space import get_preset

                    aid = get_preset(model).replace(img_size=img, num_classes=ncls).arch_id
                    if aid in by_arch:
                        entry["accuracy"] = by_arch[aid].accuracy
                except ValueError:
                    pass
        else:
            entry["pending"] = True
        out.append(entry)
    return out


def cached_reference_points(info: StudyInfo, records: Sequence[F.TrialRecord],
                            names: Sequence[str]) -> list[dict[str, Any]]:
    """Like ``reference_points`` but never counts: entries not yet cached are ``pending``."""
    img = info.img_size or 224
    ncls = info.num_classes or 1000
    out = []
    for name in names:
        if f"{name}@{img}/{ncls}" in _REF_MEMO or name.startswith("preset:") and \
                (info.user_attrs.get(A.STUDY_PRESETS) or {}).get(name.partition(":")[2]):
            out.extend(reference_points(info, records, [name]))
        else:
            out.extend(reference_points(info, records, [name], compute=False))
    return out
