"""The Pareto front and its hypervolume, as plain records read from the study store.

Pure functions over ``TrialRecord`` (the dashboard, export and report import them):

- ``load_trials(storage_url, study_name) -> list[TrialRecord]`` reads every trial;
- ``load_objectives(storage_url, study_name) -> list[(name, direction)]``;
- ``pareto_front(records, objectives) -> list[TrialRecord]``: non-dominated, COMPLETE,
  feasible, full-budget members (a trial stopped early by ASHA/pruning is never on it), one
  per genome;
- ``hypervolume(records, objectives, reference_point, normalize=False) -> float``;
- ``fidelity_summary(records) -> Fidelity | None``: for an MO-ASHA study (``nas.fidelity``),
  the candidates waiting at rungs and the epochs trained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nas import attrs

DIRECTIONS = {"accuracy": "maximize", "flops": "minimize", "params": "minimize", "latency_ms": "minimize"}
Objectives = Sequence[str] | Sequence[tuple[str, str]]
# A FAILED trial without a reason was left RUNNING by a worker that died and then failed by
# the heartbeat check (a retry with the same genome is queued).
STALE = "worker lost (no heartbeat)"


@dataclass
class TrialRecord:
    """One trial of the store, flattened (``values`` are keyed by objective name)."""

    number: int
    state: str                                 # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    values: dict[str, float] = field(default_factory=dict)
    genome: str | None = None
    arch_id: str | None = None
    summary: str | None = None
    accuracy: float | None = None
    flops: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    latency_device: str | None = None
    accuracy_per_epoch: list[float] = field(default_factory=list)
    epochs: int | None = None
    epoch_budget: int | None = None
    feasible: bool | None = None
    constraints: dict[str, float] = field(default_factory=dict)
    reused_from: int | None = None
    failure: str | None = None
    train_time_s: float | None = None
    datetime_start: str | None = None
    datetime_complete: str | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        """An objective's value: the stored objective value, else the attribute of that name."""
        if name in self.values:
            return self.values[name]
        v = getattr(self, name, None)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def full_budget(self) -> bool:
        """Trained for the whole epoch budget (unknown budgets count as full)."""
        return self.epochs is None or self.epoch_budget is None or self.epochs >= self.epoch_budget

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    @property
    def stage(self) -> str:
        """``"search"``, or ``"confirmed"`` for a supernet front member trained stand-alone."""
        return str(self.user_attrs.get(attrs.STAGE) or "search")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm_objectives(objectives: Objectives) -> list[tuple[str, str]]:
    out = []
    for o in objectives:
        if isinstance(o, str):
            out.append((o, DIRECTIONS.get(o, "minimize")))
        else:
            name, direction = o[0], o[1]
            direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
            out.append((name, direction))
    return out


def _summary(genome: Any, stored: Any) -> Any:
    """The summary of the trial's genome as ``ArchSpec.summary()`` writes it now (one that tells
    any two networks apart), else the stored one (no genome, or one that does not parse)."""
    from search_space.genome import summary_of_json

    if isinstance(genome, str):
        try:
            return summary_of_json(genome)
        except (ValueError, TypeError, KeyError):
            pass
    return stored


def record_from_trial(t: Any, objective_names: Sequence[str]) -> TrialRecord:
    """A ``TrialRecord`` from an Optuna ``FrozenTrial``."""
    ua = dict(t.user_attrs)
    values = {}
    if t.values is not None:
        values = {n: float(v) for n, v in zip(objective_names, t.values, strict=False)}

    def num(key: str, cast: type = float) -> Any:
        v = ua.get(key)
        return cast(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return TrialRecord(
        number=t.number, state=t.state.name, values=values, genome=ua.get(attrs.GENOME), arch_id=ua.get(attrs.ARCH_ID),
        summary=_summary(ua.get(attrs.GENOME), ua.get(attrs.SUMMARY)), accuracy=num(attrs.ACCURACY), flops=num(attrs.FLOPS, int),
        params=num(attrs.PARAMS, int), latency_ms=num(attrs.LATENCY_MS), latency_device=ua.get(attrs.LATENCY_DEVICE),
        accuracy_per_epoch=list(ua.get(attrs.ACCURACY_PER_EPOCH) or []), epochs=num(attrs.EPOCHS, int),
        epoch_budget=num(attrs.EPOCH_BUDGET, int), feasible=ua.get(attrs.FEASIBLE),
        constraints=dict(ua.get(attrs.CONSTRAINTS) or {}), reused_from=num(attrs.REUSED_FROM, int),
        failure=ua.get(attrs.FAILURE) or (STALE if t.state.name == "FAIL" else None), train_time_s=num(attrs.TRAIN_TIME_S),
        datetime_start=t.datetime_start.isoformat() if t.datetime_start else None,
        datetime_complete=t.datetime_complete.isoformat() if t.datetime_complete else None,
        user_attrs=ua,
    )


def _open(storage_url: str, study_name: str) -> Any:
    import optuna

    from nas.store import open_storage, require_study

    storage = open_storage(storage_url, heartbeat_s=None)
    require_study(storage, study_name, storage_url)
    return optuna.load_study(study_name=study_name, storage=storage)


def load_objectives(storage_url: str, study_name: str) -> list[tuple[str, str]]:
    """The study's objectives ``[(name, direction), ...]`` as stored when it was created."""
    study = _open(storage_url, study_name)
    return study_objectives(study)


def study_objectives(study: Any) -> list[tuple[str, str]]:
    stored = study.user_attrs.get(attrs.STUDY_OBJECTIVES)
    if stored:
        return [(o["name"], o["direction"]) for o in stored]
    names = [f"value{i}" for i in range(len(study.directions))]
    return [(n, d.name.lower()) for n, d in zip(names, study.directions, strict=False)]


def load_trials(storage_url: str, study_name: str) -> list[TrialRecord]:
    """Every trial of ``study_name`` in the store at ``storage_url`` as ``TrialRecord``s."""
    study = _open(storage_url, study_name)
    names = [n for n, _ in study_objectives(study)]
    return [record_from_trial(t, names) for t in study.get_trials(deepcopy=False)]


def load_study_attrs(storage_url: str, study_name: str) -> dict[str, Any]:
    """The study's user attributes (spec JSON, objectives, reference point, presets)."""
    return dict(_open(storage_url, study_name).user_attrs)


def eligible(records: Sequence[TrialRecord], objectives: Objectives, stage: str = "search") -> list[TrialRecord]:
    """COMPLETE, feasible, full-budget records of ``stage`` (``"search"``, or ``"confirmed"``:
    supernet front members trained stand-alone, never mixed with the search's scores) with
    every objective, one per genome (the earliest trial of each arch_id)."""
    objs = _norm_objectives(objectives)
    seen: set[str] = set()
    out = []
    for r in sorted(records, key=lambda r: r.number):
        if not r.complete or r.feasible is False or not r.full_budget or r.stage != stage:
            continue
        if any(r.metric(n) is None or not math.isfinite(r.metric(n)) for n, _ in objs):
            continue
        key = r.arch_id or f"#{r.number}"
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def _as_min(r: TrialRecord, objs: list[tuple[str, str]]) -> tuple[float, ...]:
    return tuple(-r.metric(n) if d == "maximize" else r.metric(n) for n, d in objs)


def pareto_front(records: Sequence[TrialRecord], objectives: Objectives, stage: str = "search") -> list[TrialRecord]:
    """The non-dominated eligible records of ``stage``, sorted by the first objective (best first)."""
    objs = _norm_objectives(objectives)
    pts = [(r, _as_min(r, objs)) for r in eligible(records, objs, stage)]
    front = []
    for r, p in pts:
        dominated = any(all(a <= b for a, b in zip(q, p, strict=False)) and any(a < b for a, b in zip(q, p, strict=False)) for _, q in pts)
        if not dominated:
            front.append((r, p))
    front.sort(key=lambda rp: (rp[1], rp[0].number))
    return [r for r, _ in front]


def hypervolume(records: Sequence[TrialRecord], objectives: Objectives, reference_point: Sequence[float],
                normalize: bool = False) -> float:
    """Hypervolume dominated by the eligible records' front, bounded by ``reference_point``
    (in objective units and order; for maximised objectives the reference is a lower bound).

    With ``normalize``, divide by the volume of the box between the reference point and the
    ideal point (accuracy 1, costs 0), giving a number in [0, 1].
    """
    objs = _norm_objectives(objectives)
    if len(reference_point) != len(objs):
        raise ValueError(f"reference point has {len(reference_point)} values for {len(objs)} objectives")
    ref = tuple(-float(v) if d == "maximize" else float(v) for v, (_, d) in zip(reference_point, objs, strict=False))
    pts = [_as_min(r, objs) for r in pareto_front(records, objs)]
    pts = [p for p in pts if all(a < b for a, b in zip(p, ref, strict=False))]
    hv = _hv(sorted(set(pts)), ref)
    if normalize:
        ideal = tuple(-1.0 if d == "maximize" and n == "accuracy" else 0.0 for n, d in objs)
        box = math.prod(max(0.0, b - a) for a, b in zip(ideal, ref, strict=False))
        return hv / box if box > 0 else 0.0
    return hv


def hypervolume_points(points: Sequence[Sequence[float]], reference_point: Sequence[float]) -> float:
    """Hypervolume of minimisation ``points`` w.r.t. ``reference_point`` (all objectives minimised)."""
    ref = tuple(float(v) for v in reference_point)
    pts = sorted({tuple(float(x) for x in p) for p in points if all(a < b for a, b in zip(p, ref, strict=False))})
    return _hv(pts, ref)


def _hv(pts: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Exact hypervolume by slicing on the first objective (fine for fronts of a few hundred)."""
    if not pts:
        return 0.0
    d = len(ref)
    if d == 1:
        return ref[0] - min(p[0] for p in pts)
    if d == 2:
        hv, best_y = 0.0, ref[1]
        for x, y in sorted(pts):
            if y < best_y:
                hv += (ref[0] - x) * (best_y - y)
                best_y = y
        return hv
    pts = sorted(pts)
    hv = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][0] if i + 1 < len(pts) else ref[0]
        width = upper - p[0]
        if width <= 0:
            continue
        sub = [q[1:] for q in pts[: i + 1]]
        hv += width * _hv(_nondominated(sub), ref[1:])
    return hv


def _nondominated(pts: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    out = []
    for p in pts:
        if not any(q != p and all(a <= b for a, b in zip(q, p, strict=False)) for q in pts):
            out.append(p)
    return sorted(set(out))


def reference_point_for(study_attrs: dict[str, Any], records: Sequence[TrialRecord],
                        objectives: Objectives) -> list[float]:
    """The stored reference point, else accuracy 0 and 1.1 x the largest cost seen."""
    ref = study_attrs.get(attrs.STUDY_REFERENCE_POINT)
    objs = _norm_objectives(objectives)
    if ref and len(ref) == len(objs) and all(isinstance(v, (int, float)) for v in ref):
        return [float(v) for v in ref]
    out = []
    for n, d in objs:
        vals = [r.metric(n) for r in eligible(records, objs)]
        if d == "maximize":
            out.append(0.0)
        else:
            out.append(1.1 * max(vals) if vals else 1.0)
    return out


# --------------------------------------------------------------------------------------------
# multi-fidelity (MO-ASHA, ``nas.fidelity``)
# --------------------------------------------------------------------------------------------
def is_multi_fidelity(records: Sequence[TrialRecord]) -> bool:
    """Whether any trial ran under MO-ASHA (every such trial stores ``attrs.START_EPOCH``)."""
    return any(attrs.START_EPOCH in r.user_attrs for r in records)


def waiting_trials(records: Sequence[TrialRecord]) -> dict[int, int]:
    """Trial number -> rung (epochs) of each paused candidate no later trial continued yet
    (``nas.fidelity.waiting`` over records)."""
    from nas.fidelity import waiting

    return waiting(list(records))


@dataclass(frozen=True)
class Fidelity:
    """How an MO-ASHA study spent its training; all counts in epochs unless named otherwise."""

    budget: int | None              # the recipe's epoch budget (epochs a front member trained)
    waiting: dict[int, int]         # rung (epochs) -> number of candidates waiting there
    epochs_trained: int             # epochs trained by every finished trial (a continuation counts its own)
    trials: int                     # finished trials
    candidates: int                 # candidates trained from scratch (a continuation is its paused trial's)

    @property
    def full_budget_epochs(self) -> int:
        """Epochs the same candidates would have cost trained to the full budget each."""
        return self.candidates * (self.budget or 0)

    def to_json(self) -> dict[str, Any]:
        return {"waiting": {str(k): v for k, v in self.waiting.items()}, "epochs_trained": self.epochs_trained,
                "full_budget_epochs": self.full_budget_epochs, "epoch_budget": self.budget}


def fidelity_summary(records: Sequence[TrialRecord]) -> Fidelity | None:
    """Waiting candidates per rung and training compute of an MO-ASHA study; None for any
    other study (no trial stores ``attrs.START_EPOCH``)."""
    if not is_multi_fidelity(records):
        return None
    from nas.fidelity import cumulative_compute, trained_epochs

    compute = cumulative_compute(list(records))
    by_number = {r.number: r for r in records}
    finished = [by_number[n] for n, _ in compute]
    candidates = sum(1 for r in finished if attrs.RESUMES not in r.user_attrs and trained_epochs(r.user_attrs) > 0)
    per_rung: dict[int, int] = {}
    for rung in waiting_trials(records).values():
        per_rung[rung] = per_rung.get(rung, 0) + 1
    budgets = [r.epoch_budget for r in records if r.epoch_budget]
    return Fidelity(budget=max(budgets) if budgets else None, waiting=dict(sorted(per_rung.items())),
                    epochs_trained=compute[-1][1] if compute else 0, trials=len(finished), candidates=candidates)


def member_json(r: TrialRecord) -> dict[str, Any]:
    """One front member for ``nas front --json``."""
    genome = json.loads(r.genome) if r.genome else None
    return {"trial": r.number, "values": r.values, "genome": genome, "arch_id": r.arch_id, "summary": r.summary,
            "flops": r.flops, "params": r.params, "latency_ms": r.latency_ms, "accuracy": r.accuracy,
            "epochs": r.epochs, "stage": r.stage, "supernet_accuracy": r.user_attrs.get(attrs.SUPERNET_ACCURACY),
            "confirms": r.user_attrs.get(attrs.CONFIRMS)}
