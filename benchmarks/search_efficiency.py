"""Search efficiency: hypervolume after N trials per sampler vs random, and the framework's own
per-trial overhead.

The quickstart study's space, objectives (accuracy up, FLOPs down), constraints (8M FLOPs,
0.5M params) and reference point (accuracy 0, 8M FLOPs), with the ``synthetic`` evaluator: a
deterministic function of the genome (accuracy saturating in FLOPs, per-mixer, position and
shape effects, a small genome-hashed jitter; ``nas.objective.synthetic_accuracy``). It says
nothing about real accuracy; it makes the sampler comparison cheap, exact and repeatable.
Every run writes a real SQLite study through the same code path as ``nas search`` (suggest,
screen, constrain, claim, store), so the per-trial time of a run *is* the framework's overhead
(sampling, screening, store writes; no training).

Samplers are interleaved (for each seed, every sampler in a rotating order) with equal budgets;
hypervolumes are normalised to the box between the reference point and the ideal point
(accuracy 1, 0 FLOPs). Headline: ``best_hv_ratio_vs_random`` (median over seeds of the best
sampler / median of random; goal >= 1.2) and ``overhead_ms_per_trial`` (median, SQLite; goal
<= 100 ms).

    python benchmarks/search_efficiency.py --quick --out benchmarks/results/search_efficiency.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine_info, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLERS = ("random", "nsga2", "tpe", "gp")


def run_one(base, sampler: str, seed: int, trials: int, tag: str) -> dict:
    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare
    from nas.front import eligible, hypervolume, load_trials

    spec = base.replace(name=f"{tag}_{sampler}_s{seed}", sampler=sampler, seed=seed, trials=trials)
    prepare(spec, heartbeat_s=None)
    t0, c0 = time.perf_counter(), time.process_time()
    run_worker(spec, trials)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    recs = load_trials(spec.storage, spec.name)
    objs = list(zip(spec.objective_names, spec.directions, strict=True))
    row = {"sampler": sampler, "seed": seed, "trials": len(recs),
           "feasible": sum(1 for r in recs if r.complete and r.feasible),
           "overhead_ms_per_trial": 1000 * wall / trials, "cpu_ms_per_trial": 1000 * cpu / trials,
           "hv_study_ref": hypervolume(recs, objs, list(spec.reference_point), normalize=True),
           "points": [(r.number, r.metric("accuracy"), r.metric("flops")) for r in eligible(recs, objs)]}
    return row


def normalized_hv(points: list, bounds: tuple, upto: int | None = None) -> float:
    """HV of (accuracy up, FLOPs down) points, both scaled to [0, 1] by the bounds observed over
    all runs, reference point 1.1 (the usual multi-objective benchmarking normalisation)."""
    from nas.front import hypervolume_points

    amin, amax, fmin, fmax = bounds
    pts = [((amax - a) / (amax - amin), (f - fmin) / (fmax - fmin)) for n, a, f in points
           if upto is None or n < upto]
    return hypervolume_points(pts, (1.1, 1.1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 trials per run (default 60)")
    ap.add_argument("--trials", type=int)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from nas.study import load_study

    trials = args.trials or (30 if args.quick else 60)
    seeds = [int(s) for s in args.seeds.split(",")]
    samplers = [s for s in args.samplers.split(",") if s]
    tmp = Path(tempfile.mkdtemp(prefix="nas-search-eff-"))
    base = load_study(ROOT / "studies" / "quickstart.toml")
    base = base.replace(storage=f"sqlite:///{tmp / 'bench.db'}", workers=1, timeout_s=None,
                        evaluator=base.evaluator.__class__(**{**base.evaluator.__dict__, "kind": "synthetic"}))
    run_one(base, "random", 99, min(trials, 20), "warmup")  # imports, screening kernel cache

    rows = []
    print(f"{'sampler':>8} {'seed':>4} {'trials':>6} {'feasible':>8} {'HV(ref)':>7} {'ms/trial':>9} {'cpu ms':>7}")
    for i, seed in enumerate(seeds):
        order = samplers[i % len(samplers):] + samplers[:i % len(samplers)]  # rotate: interleaved
        for sampler in order:
            row = run_one(base, sampler, seed, trials, "bench")
            rows.append(row)
            print(f"{sampler:>8} {seed:>4} {row['trials']:>6} {row['feasible']:>8} {row['hv_study_ref']:>7.4f} "
                  f"{row['overhead_ms_per_trial']:>9.1f} {row['cpu_ms_per_trial']:>7.1f}", flush=True)
    allp = [p for r in rows for p in r["points"]]
    bounds = (min(p[1] for p in allp), max(p[1] for p in allp), min(p[2] for p in allp), max(p[2] for p in allp))
    for r in rows:
        for frac in (1 / 3, 2 / 3, 1.0):
            n = round(trials * frac)
            r[f"hv@{n}"] = normalized_hv(r["points"], bounds, n)
        r["hv"] = r[f"hv@{trials}"]

    def med(sampler: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["sampler"] == sampler)

    print(f"\nmedian over seeds {seeds}, {trials} trials each (synthetic evaluator, quickstart space);")
    print("HV: objectives scaled by the range seen over all runs, reference 1.1; HV(ref): the study's "
          "reference point (accuracy 0, 8M FLOPs), normalised to its box")
    print(f"{'sampler':>8} {'HV':>7} {'vs random':>9} {'HV(ref)':>8} {'vs random':>9} {'ms/trial':>9} {'cpu ms':>7}")
    per = {}
    rand = med("random", "hv") if "random" in samplers else None
    rand_ref = med("random", "hv_study_ref") if "random" in samplers else None
    for s in samplers:
        per[s] = {"hv_median": med(s, "hv"), "hv_ratio_vs_random": med(s, "hv") / rand if rand else None,
                  "hv_study_ref_median": med(s, "hv_study_ref"),
                  "hv_study_ref_ratio_vs_random": med(s, "hv_study_ref") / rand_ref if rand_ref else None,
                  "overhead_ms_per_trial": med(s, "overhead_ms_per_trial"), "cpu_ms_per_trial": med(s, "cpu_ms_per_trial")}
        ratio = f"{per[s]['hv_ratio_vs_random']:.3f}" if rand else "-"
        ratio_ref = f"{per[s]['hv_study_ref_ratio_vs_random']:.3f}" if rand_ref else "-"
        print(f"{s:>8} {per[s]['hv_median']:>7.4f} {ratio:>9} {per[s]['hv_study_ref_median']:>8.4f} {ratio_ref:>9} "
              f"{per[s]['overhead_ms_per_trial']:>9.1f} {per[s]['cpu_ms_per_trial']:>7.1f}")
    for r in rows:
        r.pop("points")
    others = [s for s in samplers if s != "random"]
    best = max(others, key=lambda s: per[s]["hv_median"]) if others and rand else None
    summary = {
        "trials_per_run": trials, "seeds": seeds, "evaluator": "synthetic (deterministic function of the genome)",
        "best_sampler": best,
        "best_hv_ratio_vs_random": per[best]["hv_ratio_vs_random"] if best else None,
        "hv_ratio_vs_random": {s: per[s]["hv_ratio_vs_random"] for s in others},
        "hv_study_ref_ratio_vs_random": {s: per[s]["hv_study_ref_ratio_vs_random"] for s in others},
        "overhead_ms_per_trial": statistics.median(r["overhead_ms_per_trial"] for r in rows),
        "overhead_cpu_ms_per_trial": statistics.median(r["cpu_ms_per_trial"] for r in rows),
        "overhead_ms_per_trial_by_sampler": {s: per[s]["overhead_ms_per_trial"] for s in samplers},
        "goal_hv_ratio": 1.2, "goal_overhead_ms": 100.0,
    }
    print(f"\nbest sampler {best}: HV ratio vs random {summary['best_hv_ratio_vs_random']:.3f} (goal >= 1.2); "
          f"framework overhead {summary['overhead_ms_per_trial']:.1f} ms/trial wall, "
          f"{summary['overhead_cpu_ms_per_trial']:.1f} ms CPU (goal <= 100 ms, SQLite)")
    if args.out:
        m = machine_info("cpu")
        m["load_average"] = list(__import__("os").getloadavg())
        write_json(args.out, summary, rows, machine=m, per_sampler=per,
                   command=" ".join(["python", "benchmarks/search_efficiency.py", *sys.argv[1:]]))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
