"""Which parts of an architecture matter: fANOVA importance over genome features.

The search's own parameters differ between search spaces and between trials (a stage that does
not exist has no mixer parameter), so importance over them only covers the few genes every
trial shares. Here every eligible trial is described by the same features of its genome (see
``genome_features``: number of stages, total depth, depth/width/mixer per stage with 0/"-" for
a stage it lacks, each mixer's share of the blocks, stem, patch size, head, MLP ratio), and
Optuna's public importance API (``optuna.importance.get_param_importances`` with
``FanovaImportanceEvaluator``, Hutter et al. 2014, "An Efficient Approach for Assessing
Hyperparameter Importance") runs on an in-memory study built from those features. No store
access, no drawing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from nas import front as F
from nas.dashboard.views import StudyData

ABSENT = "-"  # the mixer of a stage the genome does not have


@functools.lru_cache(maxsize=65536)
def _features(genome: str) -> tuple[tuple[str, Any], ...]:
    try:
        g = json.loads(genome)
        stem, stages, head = g["stem"], list(g["stages"]), g.get("head") or {}
        depths = [int(s["depth"]) for s in stages]
        dims = [int(s["dim"]) for s in stages]
        mixers = [str(s["mixer"]) for s in stages]
        ratios = [float(s.get("mlp_ratio", 4.0)) for s in stages]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return ()
    total = sum(depths)
    if not stages or total <= 0:
        return ()
    out: dict[str, Any] = {
        "stages": float(len(stages)), "total depth": float(total), "stem": str(stem.get("kind", "?")),
        "patch size": float(stem.get("patch_size", 0)), "head": str(head.get("pool", "avg")),
        "MLP ratio (mean over blocks)": sum(d * r for d, r in zip(depths, ratios)) / total,
        "final width": float(dims[-1]),
    }
    for i, (d, w, m) in enumerate(zip(depths, dims, mixers)):
        out[f"stage {i + 1} depth"], out[f"stage {i + 1} width"], out[f"stage {i + 1} mixer"] = float(d), float(w), m
    for m in set(mixers):
        out[f"{m} share of blocks"] = sum(d for d, mm in zip(depths, mixers) if mm == m) / total
    return tuple(out.items())


def genome_features(genome: str | None, *, max_stages: int = 0, mixers: Sequence[str] = ()) -> dict[str, Any]:
    """The features of one genome JSON that every trial has (empty when it does not parse).

    Numbers (floats): ``stages``, ``total depth``, ``patch size``, ``final width``,
    ``MLP ratio (mean over blocks)``, ``stage i depth`` / ``stage i width`` for i = 1..``max_stages``
    (0 for a stage the genome lacks), ``{mixer} share of blocks`` for each name in ``mixers``
    (blocks of that mixer / all blocks, 0..1). Categories (str): ``stem``, ``head``,
    ``stage i mixer`` (``"-"`` for a stage the genome lacks).
    """
    feats = dict(_features(genome)) if genome else {}
    if not feats:
        return {}
    for i in range(1, max_stages + 1):
        feats.setdefault(f"stage {i} depth", 0.0)
        feats.setdefault(f"stage {i} width", 0.0)
        feats.setdefault(f"stage {i} mixer", ABSENT)
    for m in mixers:
        feats.setdefault(f"{m} share of blocks", 0.0)
    return feats


def param_importance(data: StudyData, *, max_trials: int = 500, seed: int = 0,
                     evaluator: str = "fanova") -> list[dict[str, Any]]:
    """Importance of each genome feature (``genome_features``) per objective, over the eligible
    trials with a genome (at most the latest ``max_trials``), as
    ``[{"objective", "param", "importance"}]`` with importances summing to 1 per objective.

    ``evaluator``: ``"fanova"`` (Optuna's default, with a 16-tree, depth-8 forest so 500 trials
    take seconds) or ``"ped_anova"``. Features that take one value over those trials are left out.
    Empty when there are fewer than two such trials or no feature varies.

    Raises:
        ValueError: an unknown ``evaluator``.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import (
        FanovaImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )

    if evaluator not in ("fanova", "ped_anova"):
        raise ValueError(f"importance evaluator {evaluator!r}: use 'fanova' or 'ped_anova'")
    objs = data.objectives
    elig = [r for r in F.eligible(data.records, objs) if _features(r.genome or "")][-max_trials:]
    if len(elig) < 2:
        return []
    raw = [dict(_features(r.genome)) for r in elig]
    max_stages = max(int(f["stages"]) for f in raw)
    mixers = sorted({k[: -len(" share of blocks")] for f in raw for k in f if k.endswith(" share of blocks")})
    rows = [genome_features(r.genome, max_stages=max_stages, mixers=mixers) for r in elig]
    dists: dict[str, Any] = {}
    for k in rows[0]:
        vals = [f[k] for f in rows]
        if len(set(vals)) < 2:
            continue
        if isinstance(vals[0], str):
            dists[k] = CategoricalDistribution(sorted(set(vals)))
        else:
            dists[k] = FloatDistribution(min(vals), max(vals))
    if not dists:
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[d for _, d in objs])
    study.add_trials([optuna.trial.create_trial(params={k: f[k] for k in dists}, distributions=dists,
                                                values=[r.metric(n) for n, _ in objs]) for f, r in zip(rows, elig)])
    out = []
    for i, (name, _) in enumerate(objs):
        ev = (FanovaImportanceEvaluator(n_trees=16, max_depth=8, seed=seed) if evaluator == "fanova"
              else PedAnovaImportanceEvaluator())
        try:
            imp = get_param_importances(study, evaluator=ev, target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError):
            continue
        out += [{"objective": name, "param": p, "importance": float(v)} for p, v in imp.items()]
    return out
