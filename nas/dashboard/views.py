"""The dashboard's view models: records -> what the page shows (rows, fronts, hypervolume over
time and, for MO-ASHA studies, over training compute, composition, one architecture's detail;
parameter importance is ``nas.dashboard.importance``). No store access, no drawing.

The front, its hypervolume and the eligibility rules (COMPLETE, feasible, full budget, one per
genome) are ``nas.front``'s; this module adds what the dashboard shows around them.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nas import attrs as A
from nas import front as F
from nas.dashboard.profile import stage_costs, stage_latency
from nas.dashboard.store import Store, StudyInfo, _as_dt

# the metrics the page can put on an axis, with the direction that is better
AXES: dict[str, str] = {"accuracy": "maximize", "flops": "minimize", "latency_ms": "minimize", "params": "minimize"}
AXIS_LABELS = {"accuracy": "accuracy (top-1)", "flops": "FLOPs (MACs)", "latency_ms": "latency (ms)",
               "params": "parameters"}


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
    complete, not on the front), ``infeasible``, ``running``, ``pruned``, ``failed``,
    ``waiting`` (MO-ASHA: paused at a rung, not continued yet; its values and ``epochs`` are the
    rung's, ``rung`` says which) or ``excluded`` (complete and feasible but not eligible: stopped
    early, a paused candidate since continued, or a repeated genome)."""
    eligible = {r.number for r in F.eligible(records, objectives)}
    waiting = F.waiting_trials(records)
    confirmed = {r.number for r in F.pareto_front(records, objectives, stage="confirmed")}
    out = []
    for r in records:
        feas = feasibility(r)
        if feas is False and r.state in ("COMPLETE", "PRUNED"):
            cat = "infeasible"  # over budget: stopped before training, or trained and told so
        elif r.state == "COMPLETE" and r.stage == "confirmed":  # a supernet front member trained stand-alone
            cat = "confirmed" if r.number in confirmed else "confirmed_dominated"
        elif r.state == "COMPLETE":
            cat = "front" if r.number in front_numbers else ("dominated" if r.number in eligible else
                                                             "waiting" if r.number in waiting else "excluded")
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
            "complete": r.datetime_complete, "failure": r.failure, "stage": r.stage,
        }
        if r.number in waiting:
            row["rung"], row["epoch_budget"] = waiting[r.number], r.epoch_budget
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
        front, hv = _hv_add(front, hv, r, objs, ref_min)
        out.append({"trial": r.number, "hypervolume": hv, "complete": r.datetime_complete})
    return out


def _hv_add(front: list[tuple[float, ...]], hv: float, r: F.TrialRecord, objs: Sequence[tuple[str, str]],
            ref_min: Sequence[float]) -> tuple[list[tuple[float, ...]], float]:
    """The front (minimisation points) and its hypervolume after adding eligible record ``r``."""
    p = tuple(-r.metric(n) if d == "maximize" else r.metric(n) for n, d in objs)
    if any(all(a <= b for a, b in zip(q, p)) for q in front):
        return front, hv
    front = [q for q in front if not all(a <= b for a, b in zip(p, q))] + [p]
    return front, F.hypervolume_points(front, ref_min)


def hypervolume_over_compute(data: StudyData) -> dict[str, Any] | None:
    """For an MO-ASHA study: the hypervolume of the full-budget front after each finished trial
    against the epochs trained so far (``nas.fidelity.cumulative_compute``: a continuation counts
    only the epochs it trained itself), with the study's reference point; None for any other
    study. ``points``: ``{"trial", "epochs", "hypervolume"}`` in completion order;
    ``epochs_trained`` / ``full_budget_epochs`` as ``nas.front.Fidelity`` counts them."""
    fid = F.fidelity_summary(data.records)
    if fid is None:
        return None
    from nas.fidelity import cumulative_compute

    objs = data.objectives
    ref = reference_point(data)
    ref_min = [-v if d == "maximize" else v for v, (_, d) in zip(ref, objs)]
    elig = {r.number for r in F.eligible(data.records, objs)}
    front: list[tuple[float, ...]] = []
    hv, points = 0.0, []
    for number, epochs in cumulative_compute(data.records):
        if number in elig:
            front, hv = _hv_add(front, hv, data.record(number), objs, ref_min)
        points.append({"trial": number, "epochs": epochs, "hypervolume": hv})
    return {"points": points, "reference_point": ref, "epochs_trained": fid.epochs_trained,
            "full_budget_epochs": fid.full_budget_epochs, "candidates": fid.candidates, "budget": fid.budget,
            "waiting": fid.waiting}


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


