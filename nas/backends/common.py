"""What every backend does before and after running trials: open the store, create or resume
the study, check the data and the budget up front, record the presets as references."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from nas import attrs
from nas.errors import NasError
from nas.space import preset_for_study
from nas.study import StudySpec, format_count


@dataclass
class SearchResult:
    study_name: str
    storage: str
    done: int
    target: int | None
    interrupted: bool = False


def create_or_load(spec: StudySpec, storage: Any) -> Any:
    """Create the study (recording spec, objectives, reference point) or resume it.

    Raises ``NasError`` if the stored study optimises other objectives than the file names.
    """
    import optuna

    from nas.store import study_names

    exists = spec.name in study_names(storage)
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions,
                                load_if_exists=True)
    if exists:
        stored = [d.name.lower() for d in study.directions]
        stored_objs = study.user_attrs.get(attrs.STUDY_OBJECTIVES)
        names = [o["name"] for o in stored_objs] if stored_objs else None
        if stored != spec.directions or (names is not None and names != spec.objective_names):
            raise NasError(f"study {spec.name!r} in the store optimises {names or stored}, but the study file "
                           f"names {spec.objective_names}; use another study name to change objectives")
        _check_same_space(study, spec)
    else:
        study.set_user_attr(attrs.STUDY_OBJECTIVES, [{"name": o.name, "direction": o.direction} for o in spec.objectives])
        study.set_metric_names(spec.objective_names)  # optuna-dashboard and study.trials_dataframe() show them
        ref = spec.default_reference_point()
        if all(v != float("inf") for v in ref):
            study.set_user_attr(attrs.STUDY_REFERENCE_POINT, ref)
    study.set_user_attr(attrs.STUDY_SPEC, spec.to_json())
    return study


def _check_same_space(study: Any, spec: StudySpec) -> None:
    """A resumed study must keep its space, data resolution, evaluator kind, epochs and caps:
    Optuna cannot mix distributions of one parameter name, results at another resolution do
    not compare, and feasibility is judged once, when a trial ends, against the caps in force
    then (the front, export, the dashboard and the samplers read it from the store)."""
    import json

    from nas.study import spec_from_dict

    raw = study.user_attrs.get(attrs.STUDY_SPEC)
    if not raw:
        return
    try:
        old = spec_from_dict(json.loads(raw))
    except Exception:  # a spec stored by another version: nothing to compare with
        return
    changed = [what for what, a, b in (("space", old.space, spec.space), ("data", old.data, spec.data),
                                       ("evaluator kind", old.evaluator.kind, spec.evaluator.kind),
                                       ("epochs", old.evaluator.epochs, spec.evaluator.epochs)) if a != b]
    caps_old, caps_new = old.constraints.limits(), spec.constraints.limits()
    if caps_old != caps_new:
        diff = ", ".join(f"{k} {_cap(k, caps_old.get(k))} (file: {_cap(k, caps_new.get(k))})"
                         for k in sorted(set(caps_old) | set(caps_new)) if caps_old.get(k) != caps_new.get(k))
        changed.append(f"caps: {diff}")
    if changed:
        raise NasError(f"study {spec.name!r} in the store was run with another {' and another '.join(changed)}; "
                       "resume it with the same study file, or give the changed study a new name")


def _cap(name: str, v: float | None) -> str:
    if v is None:
        return "none"
    return f"{v:g} ms" if name == "max_latency_ms" else format_count(v)


def preset_costs(spec: StudySpec, num_classes: int) -> dict[str, dict[str, Any]]:
    """Screened FLOPs/params of the study's presets at its resolution (the references)."""
    from evaluators.screening import screen

    out = {}
    for name in spec.presets.names:
        try:
            g = preset_for_study(name, spec, num_classes)
            c = screen(g)
            out[name] = {"flops": int(c.flops), "params": int(c.params), "summary": g.summary(),
                         "genome": g.to_json(), "arch_id": g.arch_id}
        except ValueError as e:
            out[name] = {"error": str(e)}
    return out


def check_budget(te: Any, spec: StudySpec, n: int = 48) -> None:
    """Screen ``n`` random genomes of the space; if none meets the FLOPs/params caps, raise a
    ``NasError`` saying the smallest costs seen and which presets (at this resolution) fit."""
    from nas.space import InvalidCandidate

    limits = spec.constraints.limits()
    if not ({"max_flops", "max_params"} & set(limits)):
        return
    rng = random.Random(spec.seed + 12345)
    best_f = best_p = None
    for _ in range(n):
        try:
            g = te.space.sample(rng)
        except InvalidCandidate:
            continue
        c = te.screen(g)
        ok = c["flops"] <= limits.get("max_flops", float("inf")) and c["params"] <= limits.get("max_params", float("inf"))
        if ok:
            return
        best_f = c["flops"] if best_f is None else min(best_f, c["flops"])
        best_p = c["params"] if best_p is None else min(best_p, c["params"])
    # none of the random ones fit: try the smallest corner of the space before giving up
    small = _smallest_candidates(te)
    for g in small:
        c = te.screen(g)
        if c["flops"] <= limits.get("max_flops", float("inf")) and c["params"] <= limits.get("max_params", float("inf")):
            return
        best_f = c["flops"] if best_f is None else min(best_f, c["flops"])
        best_p = c["params"] if best_p is None else min(best_p, c["params"])
    caps = ", ".join(f"{k} {format_count(v)}" for k, v in limits.items() if k in ("max_flops", "max_params"))
    fits = []
    for name, pc in preset_costs(spec.replace(presets=spec.presets.__class__(names=_all_presets())),
                                 te.num_classes).items():
        if "error" in pc:
            continue
        if pc["flops"] <= limits.get("max_flops", float("inf")) and pc["params"] <= limits.get("max_params", float("inf")):
            fits.append(f"{name} ({format_count(pc['flops'])} FLOPs)")
    preset_msg = ("presets that fit at this resolution: " + ", ".join(fits)) if fits else "no preset fits either"
    raise NasError(f"no candidate of the space meets the budget ({caps}): the smallest seen had "
                   f"{format_count(best_f)} FLOPs and {format_count(best_p)} params at {spec.data.img_size} px "
                   f"({n + len(small)} screened); {preset_msg}; raise the limits or shrink the space")


def _all_presets() -> tuple[str, ...]:
    from search_space import PRESETS

    return tuple(PRESETS)


def _smallest_candidates(te: Any) -> list[Any]:
    """Genomes at the low corner of the space: minimum depth and width, largest stem stride,
    each mixer in turn, each shape."""
    from nas.space import InvalidCandidate, RandomTrial

    class MinTrial(RandomTrial):
        def __init__(self, mixer: str, shape: str) -> None:
            super().__init__(random.Random(0))
            self.mixer, self.shape = mixer, shape

        def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
            if name == "shape":
                return self.shape
            if name.endswith("mixer"):
                return self.mixer
            if name.endswith("patch_size"):
                return max(choices)
            if name == "stem":
                return choices[0]
            if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
                return min(choices)
            return choices[0]

        def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
            return low

        def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
            return low

    out = []
    for shape in te.space.space.shapes:
        for mixer in te.space.space.mixer_names:
            try:
                out.append(te.space.suggest(MinTrial(mixer, shape)))
            except InvalidCandidate:
                pass
    return out


def record_presets(study: Any, spec: StudySpec, num_classes: int) -> None:
    """Store the presets' screened costs (and any accuracy already evaluated) on the study."""
    if not spec.presets.names:
        return
    old = study.user_attrs.get(attrs.STUDY_PRESETS) or {}
    new = preset_costs(spec, num_classes)
    for name, v in new.items():
        if name in old and old[name].get("arch_id") == v.get("arch_id") and "accuracy" in old[name]:
            v["accuracy"] = old[name]["accuracy"]
    study.set_user_attr(attrs.STUDY_PRESETS, {**old, **new})


def evaluate_presets(study: Any, spec: StudySpec, te: Any, names: list[str] | None = None) -> dict[str, Any]:
    """Train each preset (at the study's resolution) with the study's evaluator; store the
    accuracies on the study as references. Already-evaluated presets are kept."""
    presets = dict(study.user_attrs.get(attrs.STUDY_PRESETS) or {})
    for name in names or spec.presets.names:
        g = preset_for_study(name, spec, te.num_classes)
        entry = presets.get(name) or {}
        if entry.get("arch_id") == g.arch_id and "accuracy" in entry:
            continue
        cand = te.candidate_for(g)
        out = te.evaluate(cand)
        presets[name] = {"flops": cand.costs["flops"], "params": cand.costs["params"], "summary": g.summary(),
                         "genome": g.to_json(), "arch_id": g.arch_id, "feasible": cand.feasible}
        if out.status == "ok":
            presets[name]["accuracy"] = out.accuracy
        else:
            presets[name]["failure"] = out.reason
        study.set_user_attr(attrs.STUDY_PRESETS, presets)
    return presets


def fidelity_for(study: StudySpec, storage: Any) -> Any:
    """The study's MO-ASHA (``nas.fidelity.SuccessiveHalving``) when its file names
    ``[evaluator.fidelity] pruner = "mo_asha"``, else None. Paused training states go to
    ``<weights dir>/rungs`` (``nas.weights.weights_dir``)."""
    if study.evaluator.fidelity.pruner != "mo_asha":
        return None
    from nas.fidelity import SuccessiveHalving
    from nas.weights import weights_dir

    return SuccessiveHalving(study, storage, weights_dir(study) / "rungs")
