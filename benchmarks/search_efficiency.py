"""Search efficiency: the hypervolume each sampler reaches after N trials, against random, on a
synthetic or a real landscape, and the framework's per-trial overhead as the history grows.

Landscapes (``--landscape``):

- ``synthetic``: the quickstart study's space, objectives (accuracy up, FLOPs down), caps (8M
  FLOPs, 0.5M params) and reference point, with the ``synthetic`` evaluator: a deterministic
  function of the genome (``nas.objective.synthetic_accuracy``). Cheap, exact, repeatable; it
  says nothing about real accuracy.
- ``real``: the same space on the built-in ``digit_pairs`` task (two real digits apart on a
  24-px canvas, the label is the digit that sits higher: ``evaluators.data``), each candidate
  proxy-trained for a few epochs on a small subset, under caps sized so that training stays
  small. Training is deterministic per arch_id (seeded by the arch_id and a fixed training
  seed), so each arch_id is trained once per benchmark run and every sampler and seed reads the
  same result from a table (a tabular benchmark; ``--table FILE`` keeps it across runs). The
  headroom is reported: best vs median accuracy within FLOP bins, and random's normalised
  hypervolume.

Every run writes a real SQLite study through the same code path as ``nas search`` (suggest,
screen, constrain, claim, store). Samplers are interleaved (for each seed, every sampler in a
rotating order) with equal budgets. Hypervolumes are normalised to the box of the objective
ranges seen over all runs (reference 1.1, the usual normalisation of multi-objective
benchmarks). Per sampler and seed: HV after N trials, its ratio to random's at the same seed,
the regret to the HV of the best front any run found, and the trials needed to reach random's
final HV (median over seeds). The overhead phase runs the default sampler for
``--overhead-trials`` trials (synthetic evaluator, SQLite) and reports the mean per-trial wall
time over the first and the last 100 trials, for the whole framework and for the sampler alone.

    python benchmarks/search_efficiency.py --landscape synthetic --out benchmarks/results/search_efficiency.json
    python benchmarks/search_efficiency.py --landscape real --trials 100 --seeds 0,1,2,3,4 \\
        --out benchmarks/results/search_efficiency_real.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine_info, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLERS = ("random", "tpe", "nsga2", "evolution", "evolution_plain")
TRAIN_SEED = 0
# the smallest recipe seen to lift accuracy clearly above chance on digit_pairs (2,876 training pairs)
REAL = {"img_size": 24, "subset": None, "epochs": 12, "batch_size": 64, "lr": 5e-3, "max_flops": "1.5M",
        "max_params": "150K"}


# --- landscapes --------------------------------------------------------------------------
def landscape(kind: str, storage: str) -> Any:
    """The benchmark's study (see the module docstring) at ``storage``."""
    from nas.study import load_study, parse_count

    base = load_study(ROOT / "studies" / "quickstart.toml")
    base = base.replace(storage=storage, workers=1, timeout_s=None, presets=base.presets.__class__())
    ev = base.evaluator.__dict__
    if kind == "synthetic":
        return base.replace(evaluator=base.evaluator.__class__(**{**ev, "kind": "synthetic"}))
    cap_f, cap_p = parse_count(REAL["max_flops"], "max_flops"), parse_count(REAL["max_params"], "max_params")
    return base.replace(
        data=base.data.__class__(dataset="digit_pairs", img_size=REAL["img_size"], subset=REAL["subset"]),
        evaluator=base.evaluator.__class__(**{**ev, "kind": "proxy", "epochs": REAL["epochs"], "lr": REAL["lr"],
                                              "batch_size": REAL["batch_size"], "time_limit_s": None}),
        constraints=base.constraints.__class__(max_flops=cap_f, max_params=cap_p),
        reference_point=(0.0, float(cap_f)))


class TrainTable:
    """arch_id -> proxy-training result, shared by every run of the benchmark (training is
    deterministic per arch_id at the fixed ``TRAIN_SEED``). Installed by wrapping
    ``TrialEvaluator.evaluate`` in this process.

    Multi-fidelity runs (``benchmarks/multi_fidelity.py``) pause and resume training at rungs:
    for a genome the table holds, a run paused after epoch e is served from the stored per-epoch
    accuracies (a paused-and-continued run equals the uninterrupted one bit for bit:
    ``tests/evaluators/test_proxy.py``); a genome the table lacks is trained for real, segment by
    segment, from its saved state (``segments_trained``, ``segment_epochs`` count that work)."""

    def __init__(self, spec: Any, path: Path | None) -> None:
        from nas.objective import TrialEvaluator

        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self.reload()
        self.trained = 0
        self.train_s = 0.0
        self.segments_trained = 0
        self.segment_epochs = 0
        self.te = TrialEvaluator(spec.replace(seed=TRAIN_SEED))

    def install(self) -> None:
        from nas import objective

        table = self
        original = objective.TrialEvaluator.evaluate

        def evaluate(te: Any, cand: Any, on_epoch: Any = None, seed: int | None = None, *, resume: Any = None,
                     pause_at: int | None = None) -> Any:
            if te.study.evaluator.kind != "proxy":
                return original(te, cand, on_epoch, seed, resume=resume, pause_at=pause_at)
            if resume is not None or pause_at is not None:
                return table.segment(original, cand, resume, pause_at)
            row = table.rows.get(cand.arch_id)
            if row is None:  # another process sharing the table may have trained it meanwhile
                table.reload()
                row = table.rows.get(cand.arch_id)
            if row is None:
                t = time.perf_counter()
                out = original(table.te, cand, None, TRAIN_SEED)
                table.train_s += time.perf_counter() - t
                table.trained += 1
                row = table.put(cand, out)
            return objective.Outcome(row["status"], row["accuracy"], dict(row["attrs"]), row["reason"])

        objective.TrialEvaluator.evaluate = evaluate

    def segment(self, original: Any, cand: Any, resume: Any, pause_at: int | None) -> Any:
        """A multi-fidelity segment: from ``resume`` (None: the start) to ``pause_at`` (None: the
        end), served from the table when it holds the genome, else trained."""
        from nas import attrs, objective

        row = self.rows.get(cand.arch_id)
        if row is None:
            self.reload()
            row = self.rows.get(cand.arch_id)
        budget = self.te.study.evaluator.epochs
        if row is not None and (row["status"] != "ok" or len(row["attrs"].get(attrs.ACCURACY_PER_EPOCH, [])) == budget):
            curve = row["attrs"].get(attrs.ACCURACY_PER_EPOCH, [])
            e = budget if pause_at is None or pause_at >= budget else pause_at
            if row["status"] != "ok" and len(curve) < e:  # it failed before this rung
                return objective.Outcome(row["status"], row["accuracy"], dict(row["attrs"]), row["reason"])
            a = {**row["attrs"], attrs.ACCURACY_PER_EPOCH: curve[:e], attrs.EPOCHS: e, attrs.ACCURACY: curve[e - 1]}
            a.pop(attrs.FAILURE, None)
            if e < budget:
                return objective.Outcome("paused", curve[e - 1], a, f"paused after epoch {e}",
                                         state={"table": True, "epoch": e})
            return objective.Outcome("ok", curve[e - 1], a)
        if isinstance(resume, dict) and resume.get("table"):
            raise RuntimeError(f"{cand.arch_id} was served from a table that no longer holds it")
        t = time.perf_counter()
        out = original(self.te, cand, None, TRAIN_SEED, resume=resume, pause_at=pause_at)
        self.train_s += time.perf_counter() - t
        self.segments_trained += 1
        self.segment_epochs += int(out.attrs.get(attrs.EPOCHS) or 0) - (int(resume["epoch"]) if resume else 0)
        if out.status == "ok":  # trained to the end: the same result as one uninterrupted training
            self.put(cand, out)
        return out

    def put(self, cand: Any, out: Any) -> dict[str, Any]:
        """Store a whole training's outcome for ``cand`` (and save the table); returns its row."""
        row = self.rows[cand.arch_id] = {"status": out.status, "accuracy": out.accuracy, "attrs": out.attrs,
                                         "reason": out.reason, "flops": cand.costs["flops"]}
        self.save()
        return row

    def reload(self) -> None:
        if self.path and self.path.exists():
            self.rows.update(json.loads(self.path.read_text()))

    def save(self) -> None:
        """Merge into the file under a lock, so several benchmark processes (e.g. one per seed
        set, ``--seeds``) can fill one table; the file is replaced atomically."""
        if not self.path:
            return
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock"):
            if self.path.exists():
                self.rows = {**json.loads(self.path.read_text()), **self.rows}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.rows))
            tmp.replace(self.path)


# --- one run ---------------------------------------------------------------------------------
def run_one(base: Any, sampler: str, seed: int, trials: int, tag: str, budget: int | None = None) -> dict[str, Any]:
    """``trials`` trials of a study whose file says ``trials = budget`` (default ``trials``): the
    first ``trials`` of a ``budget``-trial search (the samplers size themselves by the budget)."""
    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare
    from nas.front import load_trials

    spec = base.replace(name=f"{tag}_{sampler}_s{seed}", sampler=sampler, seed=seed, trials=budget or trials)
    prepare(spec, heartbeat_s=None)
    t0, c0 = time.perf_counter(), time.process_time()
    run_worker(spec, trials)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    recs = load_trials(spec.storage, spec.name)
    ok = [r for r in recs if r.complete and r.feasible and r.full_budget and r.metric("accuracy") is not None]
    return {"sampler": sampler, "seed": seed, "trials": len(recs), "feasible": len(ok),
            "unique_arch": len({r.arch_id for r in recs}),
            "wall_ms_per_trial": 1000 * wall / trials, "cpu_ms_per_trial": 1000 * cpu / trials,
            "points": sorted((r.number, r.metric("accuracy"), r.metric("flops")) for r in ok)}


def hv_points(points: list, bounds: tuple) -> float:
    from nas.front import hypervolume_points

    amin, amax, fmin, fmax = bounds
    pts = [((amax - a) / max(amax - amin, 1e-12), (f - fmin) / max(fmax - fmin, 1e-12)) for _, a, f in points]
    return hypervolume_points(pts, (1.1, 1.1))


def hv_curve(points: list, bounds: tuple, n: int) -> list[float]:
    """HV after 1..n trials (trial numbers below k)."""
    return [hv_points([p for p in points if p[0] < k], bounds) for k in range(1, n + 1)]


def spread(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "max": xs[-1]}


def headroom(table: TrainTable, bins: int = 6) -> dict[str, Any]:
    """Best vs median accuracy of every trained arch within log-spaced FLOP bins."""
    rows = [r for r in table.rows.values() if r["status"] == "ok" and r["accuracy"] is not None]
    if len(rows) < 4:
        return {}
    lo, hi = math.log(min(r["flops"] for r in rows)), math.log(max(r["flops"] for r in rows))
    out = []
    for b in range(bins):
        a, z = lo + (hi - lo) * b / bins, lo + (hi - lo) * (b + 1) / bins
        accs = [r["accuracy"] for r in rows if a <= math.log(r["flops"]) <= z + 1e-9]
        if len(accs) >= 3:
            out.append({"flops_from": math.exp(a), "flops_to": math.exp(z), "archs": len(accs),
                        "best": max(accs), "median": statistics.median(accs), "gap": max(accs) - statistics.median(accs)})
    return {"bins": out, "archs_trained": len(rows), "best": max(r["accuracy"] for r in rows),
            "median": statistics.median(r["accuracy"] for r in rows),
            "median_gap_best_vs_median": statistics.median(b["gap"] for b in out) if out else None}


# --- overhead -------------------------------------------------------------------------------
def overhead(tmp: Path, n: int, sampler: str) -> dict[str, Any]:
    """Per-trial wall time over the first and the last 100 of ``n`` trials (synthetic, SQLite)."""
    import optuna

    import nas.samplers as ns

    spec = landscape("synthetic", f"sqlite:///{tmp / 'overhead.db'}")
    made: list[Any] = []
    original = ns.make_sampler

    def capture(*a: Any, **kw: Any) -> Any:
        s = original(*a, **kw)
        made.append(s)
        return s

    ns.make_sampler = capture
    try:
        row = run_one(spec, sampler, 0, n, "overhead")
    finally:
        ns.make_sampler = original
    study = optuna.load_study(study_name=f"overhead_{sampler}_s0", storage=spec.storage)
    done = sorted((t for t in study.trials if t.datetime_complete), key=lambda t: t.number)
    ends = [t.datetime_complete.timestamp() for t in done]
    cycles = [b - a for a, b in zip(ends, ends[1:])]
    k = min(100, len(cycles) // 2)
    timings = getattr(made[0], "timings", []) if made else []
    out = {"sampler": sampler, "trials": len(done), "window": k,
           "ms_per_trial_first": 1000 * statistics.mean(cycles[:k]),
           "ms_per_trial_last": 1000 * statistics.mean(cycles[-k:]),
           "wall_ms_per_trial": row["wall_ms_per_trial"]}
    if timings:
        out["sampler_ms_first"] = 1000 * statistics.mean(timings[:k])
        out["sampler_ms_last"] = 1000 * statistics.mean(timings[-k:])
    out["last_over_first"] = out["ms_per_trial_last"] / out["ms_per_trial_first"]
    return out


# --- main -------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--landscape", choices=("synthetic", "real"), default="synthetic")
    ap.add_argument("--quick", action="store_true", help="30 trials, 3 seeds, 300 overhead trials")
    ap.add_argument("--trials", type=int, help="trials per run (default 60 synthetic, 100 real)")
    ap.add_argument("--random-trials", type=int, default=None,
                    help="random's trials, the reference (default --trials); with --trials N < this, the other "
                         "samplers run the first N trials of a search of this budget")
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0..4)")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--overhead-trials", type=int, default=None, help="0 skips (default 1500; --quick 300)")
    ap.add_argument("--table", default=None, help="real: JSON file that keeps the arch_id -> result table")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from nas.samplers import DEFAULT_SAMPLER

    real = args.landscape == "real"
    trials = args.trials or (30 if args.quick else (100 if real else 60))
    rtrials = max(trials, args.random_trials or trials)
    seeds = [int(s) for s in (args.seeds or ("0,1,2" if args.quick else "0,1,2,3,4")).split(",")]
    samplers = [s for s in args.samplers.split(",") if s]
    n_over = args.overhead_trials if args.overhead_trials is not None else (300 if args.quick else 1500)
    tmp = Path(tempfile.mkdtemp(prefix="nas-search-eff-"))
    base = landscape(args.landscape, f"sqlite:///{tmp / 'bench.db'}")
    table = None
    if real:
        table = TrainTable(base, Path(args.table) if args.table else None)
        table.install()
    else:
        run_one(base, "random", 99, 10, "warmup")  # imports, screening kernel cache

    rows = []
    t_start = time.time()
    print(f"landscape {args.landscape}: {trials} trials x seeds {seeds}; samplers {samplers}", flush=True)
    print(f"{'sampler':>20} {'seed':>4} {'trials':>6} {'feasible':>8} {'unique':>6} {'ms/trial':>9}", flush=True)
    for i, seed in enumerate(seeds):
        order = samplers[i % len(samplers):] + samplers[:i % len(samplers)]  # rotate: interleaved
        for sampler in order:
            row = run_one(base, sampler, seed, rtrials if sampler == "random" else trials, "bench", budget=rtrials)
            rows.append(row)
            extra = f" (trained {table.trained}, {table.train_s:.0f} s)" if table else ""
            print(f"{sampler:>20} {seed:>4} {row['trials']:>6} {row['feasible']:>8} {row['unique_arch']:>6} "
                  f"{row['wall_ms_per_trial']:>9.1f}{extra}", flush=True)

    allp = [p for r in rows for p in r["points"]]
    bounds = (min(p[1] for p in allp), max(p[1] for p in allp), min(p[2] for p in allp), max(p[2] for p in allp))
    best_hv = hv_points(allp, bounds)  # the best front any run found
    for r in rows:
        r["hv_curve"] = hv_curve(r["points"], bounds, r["trials"])
        r["hv"] = r["hv_curve"][trials - 1]  # at equal trials
        r["regret"] = best_hv - r["hv"]
    has_random = "random" in samplers
    rand_by_seed = {r["seed"]: r["hv"] for r in rows if r["sampler"] == "random"}
    # the reference: random's HV after its own (possibly longer) run, median over seeds
    rand_final = statistics.median(r["hv_curve"][-1] for r in rows if r["sampler"] == "random") if has_random else None
    for r in rows:
        if has_random:
            r["hv_ratio_vs_random"] = r["hv"] / rand_by_seed[r["seed"]] if rand_by_seed[r["seed"]] else None
            hit = next((k + 1 for k, v in enumerate(r["hv_curve"]) if v >= rand_final), None)
            r["trials_to_match_random"] = hit

    per: dict[str, Any] = {}
    print(f"\n{args.landscape}: medians over seeds {seeds}, {trials} trials each; HV in the box of all runs' "
          f"ranges (reference 1.1); best front of any run: HV {best_hv:.4f}")
    print(f"{'sampler':>20} {'HV':>7} {'[q1, q3]':>17} {'vs random':>9} {'regret':>7} {'to match random':>15}")
    for s in samplers:
        mine = [r for r in rows if r["sampler"] == s]
        hv = spread([r["hv"] for r in mine])
        p = {"hv": hv, "regret": spread([r["regret"] for r in mine]),
             "hv_at": {str(n): statistics.median(r["hv_curve"][n - 1] for r in mine)
                       for n in sorted({max(1, trials // 4), trials // 2, trials})}}
        if has_random:
            ratios = [r["hv_ratio_vs_random"] for r in mine if r["hv_ratio_vs_random"] is not None]
            p["hv_ratio_vs_random"] = spread(ratios)
            hits = [r["trials_to_match_random"] if r["trials_to_match_random"] is not None else math.inf for r in mine]
            med = statistics.median(hits)
            p["trials_to_match_random"] = {"median": None if math.isinf(med) else med,
                                           "per_seed": [None if math.isinf(h) else h for h in hits]}
        per[s] = p
        ratio = f"{p['hv_ratio_vs_random']['median']:.3f}" if has_random else "-"
        match = p.get("trials_to_match_random", {}).get("median")
        print(f"{s:>20} {hv['median']:>7.4f} [{hv['q1']:.4f}, {hv['q3']:.4f}] {ratio:>9} "
              f"{p['regret']['median']:>7.4f} {'-' if match is None else f'{match:g}':>15}")

    summary: dict[str, Any] = {
        "landscape": args.landscape, "default_sampler": DEFAULT_SAMPLER, "trials_per_run": trials,
        "random_trials": rtrials, "seeds": seeds,
        "hv_ratio_vs_random": {s: per[s]["hv_ratio_vs_random"]["median"] for s in samplers
                               if s != "random" and has_random},
        "trials_to_match_random_share": None,
        "overhead_ms_per_trial_first_100": None, "overhead_ms_per_trial_last_100": None,
    }
    d = per.get(DEFAULT_SAMPLER, {}).get("trials_to_match_random", {}).get("median")
    if d is not None:
        summary["trials_to_match_random_share"] = d / rtrials
    if table is not None:
        summary["headroom"] = headroom(table)
        if has_random:
            summary["random_normalized_hv"] = per["random"]["hv"]["median"]
        summary["archs_trained"] = table.trained
        summary["train_recipe"] = dict(REAL)
        print(f"\nheadroom: {json.dumps(summary['headroom'], default=float)[:600]}")
    if n_over:
        oh = overhead(tmp, n_over, DEFAULT_SAMPLER)
        summary["overhead_ms_per_trial_first_100"] = oh["ms_per_trial_first"]
        summary["overhead_ms_per_trial_last_100"] = oh["ms_per_trial_last"]
        summary["overhead"] = oh
        print(f"\noverhead, {DEFAULT_SAMPLER}, {oh['trials']} trials: {oh['ms_per_trial_first']:.1f} ms/trial over the "
              f"first {oh['window']}, {oh['ms_per_trial_last']:.1f} over the last {oh['window']} "
              f"({oh['last_over_first']:.2f}x); sampler alone {oh.get('sampler_ms_first', float('nan')):.1f} -> "
              f"{oh.get('sampler_ms_last', float('nan')):.1f} ms")
    summary["goals"] = {"synthetic_hv_ratio_vs_random_at_60": 1.2, "real_trials_to_match_random_share": 0.5,
                        "overhead_last_over_first": 1.5}
    summary["wall_s"] = time.time() - t_start
    print(f"\nsummary: {json.dumps({k: v for k, v in summary.items() if k not in ('headroom', 'overhead')}, default=float)}")
    if args.out:
        m = machine_info("cpu")
        m["load_average"] = list(__import__("os").getloadavg())
        for r in rows:
            r.pop("points")
        write_json(args.out, summary, rows, machine=m, per_sampler=per,
                   command=" ".join(["python", "benchmarks/search_efficiency.py", *sys.argv[1:]]))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
