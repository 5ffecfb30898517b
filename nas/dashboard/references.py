"""Reference models (presets and timm models) on a study's axes, with their costs cached.

Costs are counted with ``evaluators.count_flops`` / ``count_params`` (the counter the study's
trials use) at the study's resolution, and cached per (model, img_size, num_classes) in memory
and in a JSON file under ``~/.cache/attention-nas`` (``$NAS_CACHE_DIR``), never in the store.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas import attrs as A
from nas import front as F
from nas.dashboard.store import StudyInfo, _first_line

DEFAULT_REFERENCE_COUNT = 4  # references shown by default: the ones nearest the study's budget
DEFAULT_TIMM_REFERENCES = ("resnet18", "resnet50", "mobilenetv3_large_100", "efficientnet_b0", "convnext_tiny")


# --------------------------------------------------------------------------------------------
# reference models: presets and timm, on the study's axes
# --------------------------------------------------------------------------------------------
_REF_LOCK = threading.Lock()
_REF_MEMO: dict[str, dict[str, Any]] = {}


def cached_reference_count() -> int:
    """How many reference costs this process holds (the app's refresh fingerprint includes it)."""
    return len(_REF_MEMO)


def reference_cache_path() -> Path:
    """``$NAS_CACHE_DIR/reference_costs.json`` (default ``~/.cache/attention-nas/``)."""
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
        path = reference_cache_path()
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
            path = reference_cache_path()
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


def reference_candidates(info: StudyInfo) -> list[str]:
    """Every reference the page offers first: the presets the study names (``[presets] names``),
    else every preset, plus a few timm models (``DEFAULT_TIMM_REFERENCES``)."""
    spec = info.spec
    names = list(((spec.get("presets") or {}).get("names")) or spec.get("references") or [])
    out = [n if ":" in n else f"preset:{n}" for n in names]
    if not out:
        from search_space import PRESETS

        out = [f"preset:{n}" for n in PRESETS]
    return out + [f"timm:{m}" for m in DEFAULT_TIMM_REFERENCES if f"timm:{m}" not in out]


def study_budget_flops(info: StudyInfo, records: Sequence[F.TrialRecord] = ()) -> float | None:
    """The FLOPs (MACs) the study aims at: its ``[constraints] max_flops``, else the geometric
    middle of its evaluated trials' FLOPs; None when neither is known."""
    limit = (info.spec.get("constraints") or {}).get("max_flops")
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
        return float(limit)
    flops = [r.flops for r in records if r.complete and r.flops and r.flops > 0]
    if not flops:
        return None
    return math.sqrt(min(flops) * max(flops))


def default_references(info: StudyInfo, records: Sequence[F.TrialRecord] = (), *,
                       k: int = DEFAULT_REFERENCE_COUNT) -> list[str]:
    """The ``k`` candidates (``reference_candidates``) whose FLOPs are closest, on a log scale,
    to the study's budget (``study_budget_flops``), in candidate order. Only candidates whose
    cost is already known (stored by the search or cached by ``warm_references``) are ranked;
    when no cost or no budget is known, the first ``k`` presets the study names."""
    cands = reference_candidates(info)
    target = study_budget_flops(info, records)
    known = {r["name"]: r["flops"] for r in cached_reference_points(info, [], cands) if r.get("flops")}
    if target is None or not known:
        return cands[:k]
    ranked = sorted(known, key=lambda n: (abs(math.log(known[n] / target)), cands.index(n)))[:k]
    return [n for n in cands if n in ranked]


def warm_references(info: StudyInfo, names: Sequence[str] | None = None) -> int:
    """Count and cache the costs of ``names`` (default: every candidate) at the study's
    resolution, so the page has them from its first view; returns how many are known. Seconds
    per timm model the first time, then read from the disk cache."""
    got = reference_points(info, [], list(names) if names is not None else reference_candidates(info))
    return sum(1 for r in got if r.get("flops"))


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

