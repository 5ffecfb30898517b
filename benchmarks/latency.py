"""Latency: repeatability of a measurement and accuracy/speed of the kernel-level predictor.

    .venv/bin/python benchmarks/latency.py [--quick] [--clock wall|cpu] [--threads 1] [--out FILE]

1. Repeatability: three models are measured at the start of the run and again at the end (after
   minutes of other work); per model, the coefficient of variation of the two medians and the
   within-measurement IQR / median.
2. Calibration: the predictor measures the kernels of ``--calib`` random genomes of the default
   space and the full models, and fits its overhead.
3. Accuracy on ``--test`` other random genomes (a different seed), interleaved per genome:
   (a) predicted from the table + regression before anything of the genome is measured;
   (b) predicted after its missing kernels are measured (nn-Meter's setting: kernels measured,
   the model predicted); then the full model is measured. Share within +-10% (goal >= 90%).
4. Prediction speed: predictions per second over the test genomes vs one measurement.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine_info, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (under two minutes)")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--calib", type=int, default=30, help="calibration genomes")
    ap.add_argument("--test", type=int, default=50, help="test genomes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/latency.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.img_size, args.calib, args.test = 128, 8, 10
    torch.set_num_threads(args.threads)

    from evaluators.latency import measure_latency
    from evaluators.latency_predictor import LatencyPredictor
    from evaluators.random_genomes import random_genome
    from search_space import PRESETS

    kw = dict(device="cpu", threads=args.threads, warmup=args.warmup, repeats=args.repeats, clock=args.clock)
    t_start = time.perf_counter()
    rep_models = {"deit_tiny": PRESETS["deit_tiny"].replace(img_size=args.img_size),
                  "pvt_v2_b0": PRESETS["pvt_v2_b0"].replace(img_size=args.img_size),
                  "random": random_genome(random.Random(12345), img_size=args.img_size)}
    first = {k: measure_latency(s, **kw) for k, s in rep_models.items()}

    calib = [random_genome(random.Random(1000 + i), img_size=args.img_size) for i in range(args.calib)]
    pred = LatencyPredictor.calibrate(calib, batch=1, **{k: v for k, v in kw.items() if k != "device"})
    print(f"calibrated on {args.calib} genomes: {pred.fit_report}", file=sys.stderr)

    rows = []
    for i in range(args.test):
        spec = random_genome(random.Random(5000 + i), img_size=args.img_size)
        before = pred.predict_detail(spec)
        pred.measure_kernels(spec)
        after = pred.predict_detail(spec)
        m = measure_latency(spec, **kw)
        rows.append(dict(i=i, genome=spec.summary(), measured_ms=m.median_ms, measured_iqr_ms=m.spread_ms,
                         pred_kernels_ms=after.ms, err_kernels=after.ms / m.median_ms - 1,
                         pred_regression_ms=before.ms, err_regression=before.ms / m.median_ms - 1,
                         unseen_kernels_before=before.unseen, kernel_calls=after.calls))
        print(f"[{i + 1}/{args.test}] measured {m.median_ms:8.2f} ms  kernels {after.ms:8.2f} "
              f"({rows[-1]['err_kernels']:+.1%})  regression {before.ms:8.2f} ({rows[-1]['err_regression']:+.1%})",
              file=sys.stderr)

    specs = [random_genome(random.Random(5000 + i), img_size=args.img_size) for i in range(args.test)]
    t = time.perf_counter()
    for s in specs:
        pred.predict(s)
    pred_s = (time.perf_counter() - t) / len(specs)
    measure_s = statistics.median(r["measured_ms"] for r in rows) / 1e3 * (args.warmup + args.repeats)

    second = {k: measure_latency(s, **kw) for k, s in rep_models.items()}
    rep_rows = []
    for k in rep_models:
        a, b = first[k].median_ms, second[k].median_ms
        cv = statistics.stdev([a, b]) / statistics.fmean([a, b])
        rep_rows.append(dict(model=k, first_ms=a, second_ms=b, cv_two_runs=cv,
                             iqr_over_median_first=first[k].spread_ms / a, iqr_over_median_second=second[k].spread_ms / b))

    def share(key: str, tol: float) -> float:
        return sum(abs(r[key]) <= tol for r in rows) / len(rows)

    summary = dict(
        img_size=args.img_size, threads=args.threads, clock=args.clock, calib_models=args.calib,
        test_models=args.test, kernels=len(pred.table),
        within_10pct_share=share("err_kernels", 0.10), within_20pct_share=share("err_kernels", 0.20),
        median_abs_err=statistics.median(abs(r["err_kernels"]) for r in rows),
        within_10pct_share_regression_only=share("err_regression", 0.10),
        median_abs_err_regression_only=statistics.median(abs(r["err_regression"]) for r in rows),
        repeat_cv_median=statistics.median(r["cv_two_runs"] for r in rep_rows),
        repeat_cv_max=max(r["cv_two_runs"] for r in rep_rows),
        predictions_per_s=1 / pred_s, predict_ms=pred_s * 1e3, one_measurement_s=measure_s,
        predict_speedup_vs_measure=measure_s / pred_s, overhead=list(pred.overhead),
        fit_within_10pct_calibration=pred.fit_report.get("fit_within_10pct"), goal_within_10pct=0.9,
        wall_s=time.perf_counter() - t_start,
    )
    print(f"\nrepeatability ({args.clock} clock, {args.threads} thread(s), {args.img_size}px, batch 1)")
    print(f"{'model':<12}{'1st ms':>10}{'2nd ms':>10}{'CV':>8}{'IQR/med':>9}")
    for r in rep_rows:
        print(f"{r['model']:<12}{r['first_ms']:>10.2f}{r['second_ms']:>10.2f}{r['cv_two_runs']:>8.1%}"
              f"{r['iqr_over_median_first']:>9.1%}")
    print(f"\npredictor on {args.test} unseen random genomes (calibrated on {args.calib})")
    print(f"{'mode':<36}{'within 10%':>11}{'within 20%':>11}{'median |err|':>13}")
    print(f"{'kernels measured, model predicted':<36}{summary['within_10pct_share']:>11.0%}"
          f"{summary['within_20pct_share']:>11.0%}{summary['median_abs_err']:>13.1%}")
    print(f"{'nothing measured (regression)':<36}{summary['within_10pct_share_regression_only']:>11.0%}"
          f"{share('err_regression', 0.2):>11.0%}{summary['median_abs_err_regression_only']:>13.1%}")
    print(f"\nprediction: {summary['predict_ms']:.2f} ms each ({summary['predictions_per_s']:.0f}/s) vs "
          f"{measure_s:.2f} s per measurement ({summary['predict_speedup_vs_measure']:.0f}x)")
    path = write_json(args.out, summary, rows, machine=machine_info("cpu"), repeatability=rep_rows, args=vars(args))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
