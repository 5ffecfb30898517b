"""``nas latency``: measure a model's latency (cached in SQL), build and use the latency predictor.

    nas latency measure TARGET [--device cpu|cuda] [--batch N] [--dtype D] [--img-size N] [--cache URL]
    nas latency calibrate --device cpu [--models N] [--img-size 224] [--holdout N] [--cache URL] [--out PATH]
    nas latency predict TARGET [--predictor PATH]

TARGET is ``preset:NAME``, ``timm:MODEL`` (measure only) or a genome JSON file. The predictor is
the hybrid one (kernel sum x learned correction, ``evaluators.latency_predictor``), a JSON file, by
default ``studies/latency_predictor_<device>.json`` (next to the study stores). Both ``calibrate``
and ``predict`` print its error on held-out measurements: cross-validated (5-fold, out of fold) on
the measurements it learned from, and with ``calibrate --holdout N`` on N more random genomes
measured after the fit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("latency", help="measure latency, calibrate and use the latency predictor",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="latency_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        q.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
        q.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default float32)")
        q.add_argument("--threads", type=int, default=1, help="CPU threads, fixed during timing (default 1)")
        q.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                       help="CPU timing clock: wall time, or process CPU time (robust on a shared machine)")

    m = sub.add_parser("measure", help="measure one model (served from the SQL cache when already measured)")
    m.add_argument("target", metavar="TARGET", help="preset:NAME, timm:MODEL or a genome JSON file")
    m.add_argument("--img-size", type=int, default=None)
    common(m)
    m.add_argument("--memory-format", choices=("contiguous", "channels_last"), default="contiguous")
    m.add_argument("--warmup", type=int, default=5)
    m.add_argument("--repeats", type=int, default=20)
    m.add_argument("--cache", metavar="URL", default=None,
                   help="SQLAlchemy URL of the latency cache (default sqlite:///studies/latency.db; "
                        "give the study store's URL to share its database)")
    m.add_argument("--no-cache", action="store_true", help="always measure; store nothing")
    m.add_argument("--json", action="store_true")

    c = sub.add_parser("calibrate", help="measure kernels of the default space and fit the predictor")
    common(c)
    c.add_argument("--img-size", type=int, default=224)
    c.add_argument("--models", type=int, default=24, help="random genomes to calibrate on (default 24)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--repeats", type=int, default=9)
    c.add_argument("--warmup", type=int, default=3)
    c.add_argument("--presets", action="store_true", help="also calibrate on every preset")
    c.add_argument("--holdout", type=int, default=0,
                   help="random genomes (another seed) measured after the fit to report its held-out error")
    c.add_argument("--cache", metavar="URL", default=None,
                   help="also learn from the whole-model measurements of this setting in a latency cache "
                        "(a study store's URL: every latency its searches measured)")
    c.add_argument("--out", default=None, help="predictor JSON (default studies/latency_predictor_<device>.json)")

    q = sub.add_parser("predict", help="predict a genome's latency without running it")
    q.add_argument("target", metavar="TARGET", help="preset:NAME or a genome JSON file")
    q.add_argument("--img-size", type=int, default=None)
    q.add_argument("--predictor", default=None, help="predictor JSON (default studies/latency_predictor_cpu.json)")
    q.add_argument("--json", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    return {"measure": _measure, "calibrate": _calibrate, "predict": _predict}[args.latency_command](args)


def _measure(args: argparse.Namespace) -> int:
    from evaluators.latency import LatencyCache, measure_latency, resolve_device
    from nas.commands.profile import resolve_target

    resolve_device(args.device)
    tgt = resolve_target(args.target, args.img_size)
    cache = None if args.no_cache else LatencyCache(args.cache)
    arch_id = tgt.spec.arch_id if tgt.spec is not None else f"timm:{tgt.label.split(':', 1)[1]}"
    r = measure_latency(tgt.model, device=args.device, batch=args.batch, dtype=args.dtype, img_size=tgt.img_size,
                        memory_format=args.memory_format, warmup=args.warmup, repeats=args.repeats,
                        threads=args.threads, cache=cache, arch_id=arch_id, in_chans=tgt.in_chans, clock=args.clock)
    if args.json:
        print(json.dumps(dict(target=tgt.label, **r.to_dict())))
        return 0
    src = "cache" if r.cached else "measured"
    print(f"{tgt.label}: median {r.median_ms:.2f} ms, IQR {r.spread_ms:.2f} ms ({src}; {r.repeats} runs after "
          f"{r.warmup} warm-up) on {r.device} ({r.device_name}), batch {r.batch}, {r.dtype}, {r.img_size}px, "
          f"{r.memory_format}, {r.threads} thread(s), {r.clock} clock, torch {r.torch_version}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from evaluators.latency import resolve_device
    from evaluators.latency_predictor import HybridPredictor, default_predictor_path
    from evaluators.random_genomes import random_genome
    from nas.errors import NasError

    dev = resolve_device(args.device)
    if args.models < 3:
        raise NasError(f"--models must be at least 3 to fit the overhead, got {args.models}")
    if args.img_size % 32:
        raise NasError(f"--img-size must be a multiple of 32 (the default space's total stride), got {args.img_size}")
    if args.holdout < 0:
        raise NasError(f"--holdout must be >= 0, got {args.holdout}")
    import random

    rng = random.Random(args.seed)
    specs = [random_genome(rng, img_size=args.img_size) for _ in range(args.models)]
    if args.presets:
        from search_space import PRESETS

        specs += [s.replace(img_size=args.img_size) for s in PRESETS.values()
                  if args.img_size % s.total_stride == 0]
    t0 = time.perf_counter()

    def progress(i: int, spec: Any, ms: float) -> None:
        print(f"[{i + 1}/{len(specs)}] {ms:8.2f} ms  {spec.summary()[:90]}", file=sys.stderr)

    pred = HybridPredictor.calibrate(specs, device=dev.type, batch=args.batch, dtype=args.dtype,
                                     threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                                     clock=args.clock, progress=progress)
    if args.cache:
        from evaluators.latency import LatencyCache

        rows = LatencyCache(args.cache).measurements(**pred.to_setting())
        for spec, ms in rows:
            pred.add_measurement(spec, ms)
        print(f"learning from {len(rows)} cached measurement(s) of this setting in {args.cache}; "
              f"measuring their kernels", file=sys.stderr)
        pred.refit(measure_kernels=True)
    if args.holdout:
        _holdout(pred, random.Random(args.seed + 1), args)
    out = pred.save(args.out or default_predictor_path(dev.type))
    rep = pred.fit_report
    print(f"latency predictor for {pred.device} ({pred.device_name}): {rep['kernels']} kernels from {rep['models']} "
          f"models in {time.perf_counter() - t0:.0f} s; overhead a={pred.overhead[0]:.3f} "
          f"b={pred.overhead[1]:.3f} ms/call c={pred.overhead[2]:.2f} ms; saved to {out}")
    for line in error_lines(rep):
        print(line)
    return 0


def _holdout(pred: Any, rng: Any, args: argparse.Namespace) -> None:
    """Measure ``args.holdout`` more random genomes (kernels first, as a search would) and put
    the held-out errors of the hybrid and of the kernel sum into ``pred.fit_report``."""
    import statistics

    from evaluators.latency import measure_latency
    from evaluators.random_genomes import random_genome

    hyb, ker, inside = [], [], 0
    for i in range(args.holdout):
        spec = random_genome(rng, img_size=args.img_size)
        pred.measure_kernels(spec)
        iv = pred.predict_interval(spec)
        m = measure_latency(spec, device=pred.device, batch=pred.batch, dtype=pred.dtype, threads=pred.threads,
                            warmup=args.warmup, repeats=args.repeats, clock=pred.clock).median_ms
        hyb.append(abs(iv.ms / m - 1))
        ker.append(abs(iv.kernel_ms / m - 1))
        inside += iv.lo <= m <= iv.hi
        print(f"held out [{i + 1}/{args.holdout}] measured {m:8.2f} ms, hybrid {iv.ms / m - 1:+.1%}, "
              f"kernel sum {iv.kernel_ms / m - 1:+.1%}", file=sys.stderr)
    pred.fit_report["holdout"] = dict(
        models=args.holdout, within_10pct=sum(e <= 0.1 for e in hyb) / len(hyb), median_abs_err=statistics.median(hyb),
        within_10pct_kernel_sum=sum(e <= 0.1 for e in ker) / len(ker),
        median_abs_err_kernel_sum=statistics.median(ker), interval_coverage=inside / len(hyb))


def error_lines(rep: dict[str, Any]) -> list[str]:
    """The predictor's held-out error, as printed by ``calibrate`` and ``predict``."""
    lines = []
    if "oof_within_10pct" in rep:
        lines.append(f"held-out error, 5-fold cross-validated on its {rep['correction_models']} measurements: "
                     f"hybrid {rep['oof_within_10pct']:.0%} within 10% (median {rep['oof_median_abs_err']:.1%}), "
                     f"kernel sum {rep['oof_within_10pct_kernel_sum']:.0%} "
                     f"(median {rep['oof_median_abs_err_kernel_sum']:.1%}); correction: {rep['correction']}; "
                     f"{rep['coverage']:.0%} interval +-{100 * (math.exp(rep['interval_log_halfwidth']) - 1):.0f}%")
    else:
        lines.append(f"no held-out error yet: {rep.get('reason', 'no correction fitted')} "
                     f"(predictions come without an interval)")
    h = rep.get("holdout")
    if h:
        lines.append(f"held-out error on {h['models']} genomes measured after the fit: hybrid {h['within_10pct']:.0%} "
                     f"within 10% (median {h['median_abs_err']:.1%}), kernel sum {h['within_10pct_kernel_sum']:.0%} "
                     f"(median {h['median_abs_err_kernel_sum']:.1%}); interval held {h['interval_coverage']:.0%}")
    return lines


def _predict(args: argparse.Namespace) -> int:
    from evaluators.latency_predictor import HybridPredictor, default_predictor_path
    from nas.commands.profile import resolve_target
    from nas.errors import NasError

    tgt = resolve_target(args.target, args.img_size, build=False)
    if tgt.spec is None:
        raise NasError("the predictor works on genomes (preset:NAME or a genome JSON file), not timm models")
    pred = HybridPredictor.load(args.predictor or default_predictor_path("cpu"))
    t = time.perf_counter()
    d = pred.predict_detail(tgt.spec)
    iv = pred.predict_interval(tgt.spec)
    dt = time.perf_counter() - t
    if args.json:
        print(json.dumps(dict(target=tgt.label, latency_ms=iv.ms, lo_ms=iv.lo if iv.known else None,
                              hi_ms=iv.hi if iv.known else None, kernel_prediction_ms=iv.kernel_ms,
                              kernel_sum_ms=d.kernel_sum_ms, unseen_kernels=d.unseen, by_part=d.by_part,
                              device=pred.device, device_name=pred.device_name, batch=pred.batch,
                              predictor_version=pred.version, fit_report=pred.fit_report, predict_s=dt)))
        return 0
    band = f" ({pred.coverage:.0%} interval {iv.lo:.2f}-{iv.hi:.2f} ms)" if iv.known else " (no interval yet)"
    print(f"{tgt.label}: predicted {iv.ms:.2f} ms{band}, kernel sum {iv.kernel_ms:.2f} ms, on {pred.device} "
          f"({pred.device_name}), batch {pred.batch}, {pred.threads} thread(s); {d.unseen} kernel(s) estimated "
          f"by regression (not measured); predicted in {dt * 1e3:.1f} ms")
    for line in error_lines(pred.fit_report):
        print(line)
    return 0
