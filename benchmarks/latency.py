"""Latency: the kernel-sum predictor against the hybrid (kernel sum x learned correction),
on held-out random genomes, and how much measuring a latency-capped search still needs.

    python benchmarks/latency.py [--quick] [--clock wall|cpu] [--img-sizes 224,32] [--calib N]
                                 [--test N] [--repeats N] [--threads 1] [--out FILE] [--save-predictor FILE]

1. Repeatability: three models measured at the start of the run and again at the end; per model
   the coefficient of variation of the two medians (the noise floor of any predictor's error).
2. Calibration: one ``HybridPredictor`` for this device and setting measures the kernels and the
   whole models of ``--calib`` random genomes per image size (seeds 1000+), fits the kernel sum's
   overhead and the correction on those whole-model measurements (the image size is a feature).
3. Accuracy on ``--test`` other random genomes per image size (seeds 5000+, never seen by the
   fit), interleaved per genome: the genome's kernels are measured (nn-Meter's setting: kernels
   measured, the model predicted), then the kernel sum alone and the hybrid predict it, then the
   whole model is measured. Share within +-10% and +-20%, median |error|, and how often the
   measured latency fell inside the hybrid's interval. The kernel sum from the regression alone
   (before the genome's kernels are measured) is reported too.
4. Capped search, simulated on the test genomes: with a latency cap at the median measured
   latency of each image size, ``decide_latency`` decides each candidate from the hybrid's
   interval where it can and "measures" (looks up the measurement of step 3) only in the
   uncertain band. Reported: the share measured, the wrong decisions, and whether the front
   (synthetic accuracy vs MACs among the candidates under the cap) equals the front with every
   candidate measured. The predictor is the calibrated one (no refits during the simulation).
   Kernel measurements are counted apart (a prediction needs the candidate's unseen kernels).

Goals (issue 15): hybrid ``within_10pct_share >= 0.9`` on this CPU, median error <= 4%, at most
half of the candidates measured in the capped search at the same front.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine_info, write_json  # noqa: E402


def _share(errs: list[float], tol: float) -> float:
    return sum(abs(e) <= tol for e in errs) / len(errs)


def _median_abs(errs: list[float]) -> float:
    return statistics.median(abs(e) for e in errs)


def pareto_ids(points: dict[str, tuple[float, float]]) -> set[str]:
    """Ids on the front of (accuracy: maximise, MACs: minimise)."""
    out = set()
    for i, (a, f) in points.items():
        if not any((a2 >= a and f2 <= f) and (a2 > a or f2 < f) for j, (a2, f2) in points.items() if j != i):
            out.add(i)
    return out


def capped_search(rows: list[dict], pred_by_id: dict[str, object], cap_ms: float) -> dict:
    """Simulate deciding ``latency <= cap_ms`` for ``rows`` (each with its measurement)."""
    from evaluators.latency_predictor import PREDICTOR_VERSION, decide_latency

    class _Fixed:  # the calibrated predictor's intervals, computed once in step 3
        version = PREDICTOR_VERSION

        def predict_interval(self, spec, img_size=None):
            return pred_by_id[spec.arch_id]

    measured = wrong_under = wrong_over = 0
    decided, truth = {}, {}
    for r in rows:
        spec = r["spec"]
        d = decide_latency(spec, cap_ms, _Fixed(), lambda r=r: r["measured_ms"])
        measured += d.source == "measured"
        true_over = r["measured_ms"] > cap_ms
        wrong_under += d.source == "predicted" and not d.over_cap and true_over
        wrong_over += d.source == "predicted" and d.over_cap and not true_over
        if not d.over_cap:
            decided[spec.arch_id] = (r["accuracy"], r["macs"])
        if not true_over:
            truth[spec.arch_id] = (r["accuracy"], r["macs"])
    front_d, front_t = pareto_ids(decided), pareto_ids(truth)
    return dict(cap_ms=cap_ms, candidates=len(rows), measured=measured, measured_share=measured / len(rows),
                wrong_feasible=wrong_under, wrong_infeasible=wrong_over, front_size=len(front_t),
                front_equal=front_d == front_t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (under two minutes)")
    ap.add_argument("--img-sizes", default="224,32", help="image sizes, comma-separated (ImageNet and a study's)")
    ap.add_argument("--calib", type=int, default=100, help="calibration genomes per image size")
    ap.add_argument("--test", type=int, default=100, help="held-out test genomes per image size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--coverage", type=float, default=0.9, help="the hybrid's interval coverage")
    ap.add_argument("--out", default="benchmarks/results/latency.json")
    ap.add_argument("--save-predictor", default=None, metavar="FILE",
                    help="also save the calibrated predictor (kernel table + calibration measurements) for offline study")
    args = ap.parse_args(argv)
    if args.quick:
        args.img_sizes, args.calib, args.test, args.repeats = "64,32", 8, 5, 6
    sizes = [int(s) for s in args.img_sizes.split(",")]
    torch.set_num_threads(args.threads)

    from evaluators.latency import measure_latency
    from evaluators.latency_predictor import HybridPredictor
    from evaluators.random_genomes import random_genome
    from evaluators.screening import screen
    from nas.objective import synthetic_accuracy
    from search_space import PRESETS

    def genome(seed: int, size: int):
        # ImageNet's 1000 classes at 224 px; a small study's 10 classes at study resolutions
        return random_genome(random.Random(seed), img_size=size, num_classes=1000 if size >= 128 else 10)

    kw = dict(device="cpu", threads=args.threads, warmup=args.warmup, repeats=args.repeats, clock=args.clock)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    rep_size = sizes[0]
    rep_models = {"deit_tiny": PRESETS["deit_tiny"].replace(img_size=rep_size),
                  "pvt_v2_b0": PRESETS["pvt_v2_b0"].replace(img_size=rep_size),
                  "random": random_genome(random.Random(12345), img_size=rep_size)}
    first = {k: measure_latency(s, **kw) for k, s in rep_models.items()}

    calib = [genome(1000 + i, size) for size in sizes for i in range(args.calib)]

    def progress(i: int, spec, ms: float) -> None:
        print(f"calib [{i + 1}/{len(calib)}] {spec.img_size}px {ms:8.2f} ms", file=sys.stderr)

    t_cal = time.perf_counter()
    pred = HybridPredictor.calibrate(calib, batch=1, coverage=args.coverage, progress=progress,
                                     **{k: v for k, v in kw.items() if k != "device"})
    calib_s = time.perf_counter() - t_cal
    print(f"calibrated on {len(calib)} genomes in {calib_s:.0f} s: {pred.fit_report}", file=sys.stderr)

    rows, intervals = [], {}
    kernel_measure_s = model_measure_s = 0.0
    for size in sizes:
        for i in range(args.test):
            spec = genome(5000 + i, size)
            regression_only = pred.kernel_predict(spec)
            t = time.perf_counter()
            new_kernels = pred.measure_kernels(spec)
            kernel_measure_s += time.perf_counter() - t
            iv = pred.predict_interval(spec)
            t = time.perf_counter()
            m = measure_latency(spec, **kw)
            model_measure_s += time.perf_counter() - t
            intervals[spec.arch_id] = iv
            rows.append(dict(
                img_size=size, i=i, genome=spec.summary(), arch_id=spec.arch_id, measured_ms=m.median_ms,
                measured_iqr_ms=m.spread_ms, kernel_sum_ms=iv.kernel_ms, hybrid_ms=iv.ms, lo_ms=iv.lo, hi_ms=iv.hi,
                err_kernel_sum=iv.kernel_ms / m.median_ms - 1, err_hybrid=iv.ms / m.median_ms - 1,
                err_regression_only=regression_only / m.median_ms - 1, in_interval=iv.lo <= m.median_ms <= iv.hi,
                new_kernels=new_kernels, spec=spec, macs=screen(spec).flops,
            ))
            rows[-1]["accuracy"] = synthetic_accuracy(spec, rows[-1]["macs"])
            r = rows[-1]
            print(f"test {size}px [{i + 1}/{args.test}] measured {m.median_ms:8.2f} ms  kernel sum "
                  f"{r['err_kernel_sum']:+.1%}  hybrid {r['err_hybrid']:+.1%}  in [lo, hi]: {r['in_interval']}",
                  file=sys.stderr)

    t = time.perf_counter()
    for r in rows:
        pred.predict_interval(r["spec"])
    predict_ms = (time.perf_counter() - t) / len(rows) * 1e3

    searches = []
    for size in sizes:
        sub = [r for r in rows if r["img_size"] == size]
        cap = statistics.median(r["measured_ms"] for r in sub)
        searches.append(dict(img_size=size, **capped_search(sub, intervals, cap)))

    second = {k: measure_latency(s, **kw) for k, s in rep_models.items()}
    rep_rows = []
    for k in rep_models:
        a, b = first[k].median_ms, second[k].median_ms
        rep_rows.append(dict(model=k, img_size=rep_size, first_ms=a, second_ms=b,
                             cv_two_runs=statistics.stdev([a, b]) / statistics.fmean([a, b]),
                             iqr_over_median_first=first[k].spread_ms / a))

    def errs(key: str, size: int | None = None) -> list[float]:
        return [r[key] for r in rows if size is None or r["img_size"] == size]

    summary = dict(
        img_sizes=sizes, threads=args.threads, clock=args.clock, repeats=args.repeats,
        calib_models_per_size=args.calib, test_models_per_size=args.test, kernels=len(pred.table),
        correction=pred.fit_report.get("correction"),
        within_10pct_share=_share(errs("err_hybrid"), 0.10),
        within_20pct_share=_share(errs("err_hybrid"), 0.20),
        median_abs_err=_median_abs(errs("err_hybrid")),
        within_10pct_share_kernel_sum=_share(errs("err_kernel_sum"), 0.10),
        within_20pct_share_kernel_sum=_share(errs("err_kernel_sum"), 0.20),
        median_abs_err_kernel_sum=_median_abs(errs("err_kernel_sum")),
        within_10pct_share_regression_only=_share(errs("err_regression_only"), 0.10),
        median_abs_err_regression_only=_median_abs(errs("err_regression_only")),
        interval_coverage=sum(r["in_interval"] for r in rows) / len(rows), interval_target=args.coverage,
        interval_halfwidth_pct=100 * (pred.fit_report.get("interval_log_halfwidth", float("nan"))),
        measured_share_capped_search=sum(s["measured"] for s in searches) / sum(s["candidates"] for s in searches),
        front_equal_capped_search=all(s["front_equal"] for s in searches),
        wrong_decisions_capped_search=sum(s["wrong_feasible"] + s["wrong_infeasible"] for s in searches),
        kernel_measure_s_over_model_measure_s=kernel_measure_s / model_measure_s,
        repeat_cv_median=statistics.median(r["cv_two_runs"] for r in rep_rows),
        repeat_cv_max=max(r["cv_two_runs"] for r in rep_rows),
        predict_ms=predict_ms, calibrate_s=calib_s,
        goal_within_10pct=0.9, goal_median_abs_err=0.04, goal_measured_share=0.5,
        load_avg_start=load_start[0], load_avg_end=os.getloadavg()[0],
        wall_s=time.perf_counter() - t_start,
    )
    for size in sizes:
        summary[f"within_10pct_share_{size}px"] = _share(errs("err_hybrid", size), 0.10)
        summary[f"within_10pct_share_kernel_sum_{size}px"] = _share(errs("err_kernel_sum", size), 0.10)
        summary[f"median_abs_err_{size}px"] = _median_abs(errs("err_hybrid", size))
        summary[f"median_abs_err_kernel_sum_{size}px"] = _median_abs(errs("err_kernel_sum", size))

    print(f"\nrepeatability ({args.clock} clock, {args.threads} thread(s), {rep_size}px, batch 1)")
    for r in rep_rows:
        print(f"  {r['model']:<12}{r['first_ms']:>9.2f}{r['second_ms']:>9.2f} ms  CV {r['cv_two_runs']:.1%}")
    print(f"\nheld-out random genomes ({args.test} per size; calibrated on {args.calib} per size), kernels measured")
    print(f"{'size':>6} {'predictor':<12}{'within 10%':>11}{'within 20%':>11}{'median |err|':>13}")
    for size in [*sizes, None]:
        for name, key in (("kernel sum", "err_kernel_sum"), ("hybrid", "err_hybrid")):
            e = errs(key, size)
            print(f"{size or 'all':>6} {name:<12}{_share(e, 0.1):>11.0%}{_share(e, 0.2):>11.0%}{_median_abs(e):>13.1%}")
    print(f"hybrid interval ({args.coverage:.0%} target) held the measurement for "
          f"{summary['interval_coverage']:.0%}")
    for s in searches:
        print(f"capped search {s['img_size']}px (cap {s['cap_ms']:.2f} ms): measured {s['measured']}/{s['candidates']}"
              f" ({s['measured_share']:.0%}), wrong decisions {s['wrong_feasible'] + s['wrong_infeasible']}, "
              f"front equal: {s['front_equal']}")
    for r in rows:
        del r["spec"]
    if args.save_predictor:
        print(f"saved the calibrated predictor to {pred.save(args.save_predictor)}")
    path = write_json(args.out, summary, rows, machine=machine_info("cpu"), repeatability=rep_rows,
                      capped_search=searches, fit_report=pred.fit_report, args=vars(args))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
