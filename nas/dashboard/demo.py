"""A synthetic study written through Optuna in the real store format (``nas.attrs``).

Used by the dashboard's tests, its benchmark and its screenshot, and handy for trying the
dashboard without running a search: every trial carries a real genome (a preset with its
depths rescaled), costs scaled from the preset's, a learning curve, constraint values both as
the ``constraints`` user attribute and as the ``constraints`` system attribute that Optuna's
samplers write via ``constraints_func``. Values are synthetic; the format is not.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import random
import warnings
from dataclasses import dataclass
from typing import Any

from nas import attrs as A

# (GMACs, Mparams, ImageNet-ish top-1) at 224 px: scale anchors for the synthetic costs.
_ANCHORS: dict[str, tuple[float, float]] = {
    "deit_tiny": (1.26, 5.7), "deit_small": (4.6, 22.0), "swin_tiny": (4.5, 28.3),
    "pvt_v2_b0": (0.57, 3.7), "pvt_v2_b1": (2.1, 14.0), "poolformer_s12": (1.8, 11.9),
    "convformer_s18": (3.9, 26.8), "caformer_s18": (4.1, 26.3),
}
DEPTH_SCALES = (0.5, 0.75, 1.0, 1.25)


@dataclass(frozen=True)
class DemoStudy:
    """What ``write_demo_study`` wrote: enough for a test to know what to expect."""

    storage_url: str
    study_name: str
    n_trials: int
    objectives: tuple[str, ...]
    max_flops: float


def _genome(family: str, depth_scale: float, pos: str | None, num_classes: int, img_size: int,
            mlp_ratio: float | None = None):
    from search_space import PRESETS

    base = PRESETS[family]
    stages = tuple(
        s.__class__(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                       "depth": max(1, round(s.depth * depth_scale)),
                       "pos": pos if (pos is not None and len(base.stages) == 1) else s.pos,
                       "mlp_ratio": float(mlp_ratio) if mlp_ratio is not None else s.mlp_ratio})
        for s in base.stages
    )
    return base.replace(stages=stages, num_classes=num_classes, img_size=img_size)


def create_demo_study(storage_url: str, study_name: str, *, three_objectives: bool = False,
                      max_flops: float = 3.0e9, img_size: int = 224):
    """Create (or load) the study with the store's study attributes and metric names."""
    import optuna

    objectives = [{"name": "accuracy", "direction": "maximize"}, {"name": "flops", "direction": "minimize"}]
    if three_objectives:
        objectives.append({"name": "latency_ms", "direction": "minimize"})
    study = optuna.create_study(storage=storage_url, study_name=study_name, load_if_exists=True,
                                directions=[o["direction"] for o in objectives])
    if not study.user_attrs.get(A.STUDY_OBJECTIVES):
        with warnings.catch_warnings():  # experimental in Optuna; what optuna-dashboard reads
            warnings.simplefilter("ignore")
            study.set_metric_names([o["name"] for o in objectives])
        study.set_user_attr(A.STUDY_OBJECTIVES, objectives)
        ref = [0.0, 2 * max_flops] + ([200.0] if three_objectives else [])
        study.set_user_attr(A.STUDY_REFERENCE_POINT, ref)
        spec = {"name": study_name, "img_size": img_size, "num_classes": 10,
                "objectives": objectives, "constraints": {"max_flops": max_flops},
                "references": ["preset:deit_tiny", "preset:pvt_v2_b0"]}
        study.set_user_attr(A.STUDY_SPEC, json.dumps(spec))
        # what the search stores for its presets: costs at the study's resolution, accuracy when
        # evaluated with the study's recipe (here: one of the two)
        presets = {}
        for name, acc in (("deit_tiny", 0.71), ("pvt_v2_b0", None)):
            g = _genome(name, 1.0, None, 10, img_size)
            gm, mp = _anchor_costs(name, 1.0, img_size)
            presets[name] = {"flops": int(gm * 1e9), "params": int(mp * 1e6), "summary": g.summary(),
                             "genome": g.to_json(), "arch_id": g.arch_id, "feasible": gm * 1e9 <= max_flops}
            if acc is not None:
                presets[name]["accuracy"] = acc
        study.set_user_attr(A.STUDY_PRESETS, presets)
    return study


def make_demo_trial(rng: random.Random, number: int, *, objectives: tuple[str, ...], max_flops: float,
                    img_size: int = 224, start: _dt.datetime | None = None, state: str = "COMPLETE"):
    """One ``optuna.trial.FrozenTrial`` with the full set of store attributes."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    family = rng.choice(sorted(_ANCHORS))
    depth_scale = rng.choice(DEPTH_SCALES)
    pos = rng.choice(["abs", "sincos", "none"])
    mlp_ratio = round(rng.uniform(2.0, 4.5), 2)
    spec = _genome(family, depth_scale, pos, 10, img_size, mlp_ratio)
    gmacs, mparams = _anchor_costs(family, depth_scale, img_size)
    gmacs, mparams = gmacs * (0.4 + 0.15 * mlp_ratio), mparams * (0.4 + 0.15 * mlp_ratio)
    flops = int(gmacs * 1e9 * rng.uniform(0.95, 1.05))
    params = int(mparams * 1e6 * rng.uniform(0.97, 1.03))
    weights = [s.depth * s.dim * s.dim for s in spec.stages]
    tot = sum(weights)
    flops_per_stage = [int(flops * w / tot) for w in weights]
    params_per_stage = [int(params * w / tot) for w in weights]
    acc = max(0.05, min(0.99, 0.55 + 0.09 * math.log(gmacs * 4 + 1) + rng.gauss(0, 0.03)))
    epochs = 8
    curve = [round(acc * (1 - math.exp(-(e + 1) / 2.5)) + rng.gauss(0, 0.005), 4) for e in range(epochs)]
    curve[-1] = round(acc, 4)
    latency = 2.0 + gmacs * 9.0 * rng.uniform(0.85, 1.15)
    cons = {"max_flops": float(flops - max_flops)}
    feasible = all(v <= 0 for v in cons.values())
    metrics = {"accuracy": acc, "flops": float(flops), "latency_ms": latency, "params": float(params)}
    start = start or _dt.datetime.now()
    user_attrs: dict[str, Any] = {
        A.GENOME: spec.to_json(), A.ARCH_ID: spec.arch_id, A.SUMMARY: spec.summary(),
        A.FLOPS: flops, A.PARAMS: params, A.FLOPS_PER_STAGE: flops_per_stage,
        A.PARAMS_PER_STAGE: params_per_stage, A.LATENCY_MS: latency, A.LATENCY_SPREAD_MS: latency * 0.03,
        A.LATENCY_DEVICE: "cpu: synthetic (demo)", A.FEASIBLE: feasible, A.CONSTRAINTS: cons,
        A.DEVICE: "cpu", A.CODE_VERSION: "demo",
    }
    if feasible:
        user_attrs.update({A.ACCURACY: acc, A.ACCURACY_PER_EPOCH: curve, A.EPOCHS: epochs,
                           A.EPOCH_BUDGET: epochs, A.TRAIN_TIME_S: 30.0 + gmacs * 20,
                           A.LOSS_PER_EPOCH: [round(2.3 * (1 - c), 4) for c in curve]})
    st = getattr(optuna.trial.TrialState, state)
    values = None
    if st == optuna.trial.TrialState.COMPLETE:
        # over budget: no training; recorded with the constraint violation (accuracy 0)
        values = [metrics[o] if (feasible or o != "accuracy") else 0.0 for o in objectives]
    elif st in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL):
        user_attrs[A.FAILURE] = "synthetic failure" if st == optuna.trial.TrialState.FAIL else "pruned early"
    del number  # numbers are assigned by the storage
    trial = optuna.trial.create_trial(
        state=st, values=values,
        params={"family": family, "depth_scale": depth_scale, "pos": pos, "mlp_ratio": mlp_ratio},
        distributions={"family": CategoricalDistribution(sorted(_ANCHORS)),
                       "depth_scale": FloatDistribution(0.5, 1.25, step=0.25),
                       "pos": CategoricalDistribution(["abs", "sincos", "none"]),
                       "mlp_ratio": FloatDistribution(2.0, 4.5, step=0.01)},
        user_attrs=user_attrs,
        # what Optuna's samplers store for ``constraints_func`` (optuna-dashboard reads it)
        system_attrs={"constraints": list(cons.values())},
        intermediate_values={e: c for e, c in enumerate(curve)} if feasible else {},
    )
    trial.datetime_start = start
    trial.datetime_complete = start + _dt.timedelta(seconds=5 + 40 * gmacs)
    return trial


def _anchor_costs(family: str, depth_scale: float, img_size: int) -> tuple[float, float]:
    gmacs, mparams = _ANCHORS[family]
    return gmacs * depth_scale * (img_size / 224) ** 2, mparams * (0.15 + 0.85 * depth_scale)


def write_demo_study(storage_url: str, study_name: str = "demo", n_trials: int = 200, *, seed: int = 0,
                     three_objectives: bool = False, max_flops: float = 3.0e9, img_size: int = 224,
                     fail_every: int = 0) -> DemoStudy:
    """Write ``n_trials`` synthetic trials in one batch (``study.add_trials``)."""
    rng = random.Random(seed)
    study = create_demo_study(storage_url, study_name, three_objectives=three_objectives,
                              max_flops=max_flops, img_size=img_size)
    objectives = tuple(o["name"] for o in study.user_attrs[A.STUDY_OBJECTIVES])
    # trials spread over the recent past, ending now, so wall-time views line up with live ones
    t0 = _dt.datetime.now() - _dt.timedelta(seconds=32.5 * n_trials + 60)
    trials = []
    clock = t0
    for i in range(n_trials):
        state = "FAIL" if fail_every and i % fail_every == fail_every - 1 else "COMPLETE"
        tr = make_demo_trial(rng, i, objectives=objectives, max_flops=max_flops, img_size=img_size,
                             start=clock, state=state)
        clock += _dt.timedelta(seconds=rng.uniform(5, 60))
        trials.append(tr)
    study.add_trials(trials)
    return DemoStudy(storage_url, study_name, n_trials, objectives, max_flops)


def fast_storage(url: str):
    """An Optuna ``RDBStorage`` for writing demo stores quickly (SQLite without fsync per commit)."""
    import optuna
    import sqlalchemy as sa
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = RDBStorage(url)
    if url.startswith("sqlite"):
        sa.event.listen(storage.engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
        storage.engine.dispose()
    return storage


def live_writer(storage_url: str, study_name: str, target_file: str, done_file: str, *,
                step_s: float = 0.2, seed: int = 1, max_idle_s: float = 300.0) -> None:
    """Behave like a running search: ask a trial (RUNNING), write its attributes, tell it.

    Keeps going until the study holds the number of trials written in ``target_file`` (re-read
    continually), then writes that count to ``done_file`` and waits with one trial RUNNING
    (asked, not yet told) for a higher target. Stops after ``max_idle_s`` without a new target.
    """
    import time
    from pathlib import Path

    import optuna

    rng = random.Random(seed)
    study = optuna.load_study(study_name=study_name, storage=fast_storage(storage_url))
    objectives = tuple(o["name"] for o in study.user_attrs[A.STUDY_OBJECTIVES])
    max_flops = json.loads(study.user_attrs[A.STUDY_SPEC])["constraints"]["max_flops"]
    idle_since = time.time()
    pending = None
    while time.time() - idle_since < max_idle_s:
        try:
            target = int(Path(target_file).read_text().strip() or 0)
        except (OSError, ValueError):
            target = 0
        n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        if n >= target:
            Path(done_file).write_text(str(n))
            if pending is None:
                pending = study.ask()  # a trial in flight, as in a real search
            time.sleep(0.1)
            continue
        idle_since = time.time()
        trial = pending or study.ask()
        pending = None
        frozen = make_demo_trial(rng, trial.number, objectives=objectives, max_flops=max_flops)
        for k, v in frozen.user_attrs.items():
            trial.set_user_attr(k, v)
        for k, v in frozen.user_attrs[A.CONSTRAINTS].items():
            trial.set_constraint(k, v)  # as the search does (Optuna 5's per-name constraint attrs)
        time.sleep(step_s)
        study.tell(trial, frozen.values)


if __name__ == "__main__":  # python -m nas.dashboard.demo URL STUDY TARGET_FILE DONE_FILE
    import sys

    live_writer(*sys.argv[1:5])
