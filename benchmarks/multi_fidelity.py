"""Multi-fidelity (MO-ASHA) against full-fidelity search: hypervolume over cumulative training
epochs, on the real landscape of ``benchmarks/search_efficiency.py``.

Same task, recipe, caps and default sampler (``evolution``) as that benchmark's ``real``
landscape (``digit_pairs`` at 24 px, 12 epochs, 1.5M FLOPs / 150K params). Per seed:

- full fidelity: the sampler's ``--full-trials`` trials, each feasible one trained for the
  whole 12 epochs (served from the shared arch_id -> result table when it holds the genome:
  the same trial sequence as the search-efficiency benchmark's evolution run at that seed);
- multi-fidelity: the same study with ``[evaluator.fidelity] pruner = "mo_asha"``
  (``--min-epochs``, ``--eta``; rungs 1, 3, 9 of 12 by default), run until its trials have
  trained ``--mf-share`` of the full run's epochs. Paused candidates keep their state and
  continue when promoted (``nas.fidelity``). A genome the table holds is served from its stored
  per-epoch accuracies (a paused-and-continued run equals an uninterrupted one bit for bit,
  ``tests/evaluators/test_proxy.py``); others are trained for real, segment by segment.

Compute is counted in epochs trained (a continuation counts only its own epochs; an infeasible
or reused trial counts 0). Hypervolume is over full-budget, feasible results only (a paused
candidate's rung accuracy is no result), normalised to the box of every run's objective
ranges, reference 1.1, as in ``search_efficiency.py``.

Summary: ``compute_share_to_same_hv`` (median over seeds of the MF epochs needed to reach the
full run's final HV, divided by the full run's epochs; a seed that never reaches it within its
budget counts as not reached), ``final_hv_ratio`` (median of MF HV / full HV at the MF run's
final compute), ``seeds``.

    python benchmarks/multi_fidelity.py --seeds 0,3,2 --table benchmarks/results/digit_pairs_table.json \\
        --out benchmarks/results/multi_fidelity.json
"""

from __future__ import annotations

import argparse
import dataclasses
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
from benchmarks.search_efficiency import TrainTable, hv_points, landscape, spread  # noqa: E402


def trace(spec: Any) -> list[tuple[int, float | None, float | None, int]]:
    """(trial number, accuracy, FLOPs, cumulative epochs after it) in completion order; accuracy
    and FLOPs only for feasible full-budget results."""
    from nas.fidelity import cumulative_compute
    from nas.front import load_trials

    recs = {r.number: r for r in load_trials(spec.storage, spec.name)}
    out = []
    for number, total in cumulative_compute(list(recs.values())):
        r = recs[number]
        ok = r.complete and r.feasible is not False and r.full_budget and r.metric("accuracy") is not None
        out.append((number, r.metric("accuracy") if ok else None, r.metric("flops") if ok else None, total))
    return out


def hv_at(tr: list, bounds: tuple, compute: float) -> float:
    return hv_points([(n, a, f) for n, a, f, c in tr if a is not None and c <= compute], bounds)


def run_full(base: Any, seed: int, trials: int, budget: int) -> Any:
    """The first ``trials`` trials of a ``budget``-trial full-fidelity search (the sampler sizes
    itself by the budget: the same trials as search_efficiency.py's evolution run at this seed)."""
    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare

    spec = base.replace(name=f"full_s{seed}", sampler="evolution", seed=seed, trials=budget)
    prepare(spec, heartbeat_s=None)
    run_worker(spec, trials)
    return spec


def run_mf(base: Any, seed: int, trials: int, budget_epochs: int, min_epochs: int, eta: int, chunk: int) -> Any:
    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare

    f = dataclasses.replace(base.evaluator.fidelity, pruner="mo_asha", min_epochs=min_epochs, reduction_factor=eta)
    # trials = the full run's budget, so the sampler is configured alike; the loop runs past it
    spec = base.replace(name=f"mf_s{seed}", sampler="evolution", seed=seed, trials=trials,
                        evaluator=dataclasses.replace(base.evaluator, fidelity=f))
    prepare(spec, heartbeat_s=None)
    target = 0
    while True:
        target += chunk
        run_worker(spec, target)
        tr = trace(spec)
        if tr and tr[-1][3] >= budget_epochs:
            return spec
        if target > 20 * trials:
            raise RuntimeError("the multi-fidelity run does not spend its compute budget")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--full-trials", type=int, default=50, help="trials of the full-fidelity run")
    ap.add_argument("--budget", type=int, default=100,
                    help="the study files' trials (sizes the sampler): the runs are its first trials")
    ap.add_argument("--mf-share", type=float, default=0.5, help="MF compute budget as a share of the full run's")
    ap.add_argument("--min-epochs", type=int, default=1)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=5, help="MF trials between compute checks")
    ap.add_argument("--table", default=None, help="the arch_id -> result table shared with search_efficiency.py")
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                    help="no runs: recompute the summary over the runs of these earlier outputs together "
                         "(one normalisation box, as if run at once)")
    args = ap.parse_args()
    t0 = time.time()
    if args.merge:
        docs = [json.loads(Path(f).read_text()) for f in args.merge]
        runs = [{k: r[k] for k in ("seed", "full", "mf", "mf_segments_trained", "mf_epochs_trained_for_real")}
                for d in docs for r in d["rows"]]
        settings = {k: docs[0]["summary"][k] for k in ("mf_budget_share", "full_trials", "budget", "rungs")}
        report(runs, settings, t0, args.out, merged=[d["command"] for d in docs])
        return
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="nas-mf-"))
    base = landscape("real", f"sqlite:///{tmp / 'bench.db'}")
    table = TrainTable(base, Path(args.table) if args.table else None)
    table.install()
    t0 = time.time()
    runs = []
    for seed in seeds:
        full = run_full(base, seed, args.full_trials, args.budget)
        tf = trace(full)
        budget = math.ceil(args.mf_share * tf[-1][3])
        seg0, ep0 = table.segments_trained, table.segment_epochs
        mf = run_mf(base, seed, args.budget, budget, args.min_epochs, args.eta, args.chunk)
        tm = trace(mf)
        runs.append({"seed": seed, "full": tf, "mf": tm, "mf_segments_trained": table.segments_trained - seg0,
                     "mf_epochs_trained_for_real": table.segment_epochs - ep0})
        print(f"seed {seed}: full {len(tf)} trials, {tf[-1][3]} epochs; mf {len(tm)} trials, {tm[-1][3]} epochs "
              f"({table.segments_trained - seg0} segments trained, {table.segment_epochs - ep0} epochs for real)",
              flush=True)
    report(runs, {"mf_budget_share": args.mf_share, "full_trials": args.full_trials, "budget": args.budget,
                  "rungs": {"min_epochs": args.min_epochs, "eta": args.eta}}, t0, args.out)


def report(runs: list[dict[str, Any]], settings: dict[str, Any], t0: float, out: str | None,
           merged: list[str] | None = None) -> None:
    """HV over compute per seed in one normalisation box, the summary, the JSON."""
    pts = [(n, a, f) for r in runs for k in ("full", "mf") for n, a, f, _ in r[k] if a is not None]
    bounds = (min(p[1] for p in pts), max(p[1] for p in pts), min(p[2] for p in pts), max(p[2] for p in pts))
    shares, ratios = [], []
    for r in runs:
        tf, tm = r["full"], r["mf"]
        full_total, mf_total = tf[-1][3], tm[-1][3]
        target = hv_at(tf, bounds, full_total)
        hit = next((c for _, _, _, c in tm if hv_at(tm, bounds, c) >= target), None)
        r["full_epochs"], r["mf_epochs"] = full_total, mf_total
        r["full_final_hv"] = target
        r["mf_final_hv"] = hv_at(tm, bounds, mf_total)
        r["full_hv_at_mf_compute"] = hv_at(tf, bounds, mf_total)
        r["compute_share_to_same_hv"] = None if hit is None else hit / full_total
        r["final_hv_ratio"] = r["mf_final_hv"] / r["full_hv_at_mf_compute"] if r["full_hv_at_mf_compute"] else None
        grid = sorted({c for _, _, _, c in tf} | {c for _, _, _, c in tm})
        r["hv_over_epochs"] = {"epochs": grid, "full": [hv_at(tf, bounds, c) for c in grid],
                               "mf": [hv_at(tm, bounds, c) for c in grid]}
        shares.append(math.inf if hit is None else hit / full_total)
        if r["final_hv_ratio"] is not None:
            ratios.append(r["final_hv_ratio"])
        print(f"seed {r['seed']}: full HV {target:.4f} after {full_total} epochs; MF HV {r['mf_final_hv']:.4f} after "
              f"{mf_total} (full at that compute {r['full_hv_at_mf_compute']:.4f}); MF reached the full HV "
              f"{'never' if hit is None else f'after {hit} epochs ({hit / full_total:.2f})'}")
    med = statistics.median(shares)
    summary = {
        "compute_share_to_same_hv": None if math.isinf(med) else med,
        "compute_share_to_same_hv_per_seed": [None if math.isinf(s) else s for s in shares],
        "final_hv_ratio": statistics.median(ratios) if ratios else None,
        "final_hv_ratio_spread": spread(ratios) if ratios else None,
        "seeds": [r["seed"] for r in runs], **settings,
        "goal": {"compute_share_to_same_hv": 0.33}, "wall_s": time.time() - t0,
    }
    print(f"\nsummary: {json.dumps(summary, default=float)}")
    if out:
        m = machine_info("cpu")
        m["load_average"] = list(__import__("os").getloadavg())
        extra = {"merged_from": merged} if merged else {}
        write_json(out, summary, runs, machine=m,
                   command=" ".join(["python", "benchmarks/multi_fidelity.py", *sys.argv[1:]]), **extra)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
