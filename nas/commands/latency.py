"""``nas latency``: measure a model's latency (cached in SQL), build and use the latency predictor.

    nas latency measure TARGET [--device cpu|cuda] [--batch N] [--dtype D] [--img-size N] [--cache URL]
    nas latency calibrate --device cpu [--models N] [--img-size 224] [--out PATH]
    nas latency predict TARGET [--predictor PATH]

TARGET is ``preset:NAME``, ``timm:MODEL`` (measure only) or a genome JSON file. The predictor is a
JSON file, by default ``studies/latency_predictor_<device>.json`` (next to the study stores).
"""

from __future__ import annotations

import argparse
import json
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
    from evaluators.latency_predictor import LatencyPredictor, default_predictor_path
    from evaluators.random_genomes import random_genome
    from nas.errors import NasError

    dev = resolve_device(args.device)
    if args.models < 3:
        raise NasError(f"--models must be at least 3 to fit the overhead, got {args.models}")
    if args.img_size % 32:
        raise NasError(f"--img-size must be a multiple of 32 (the default space's total stride), got {args.img_size}")
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

    pred = LatencyPredictor.calibrate(specs, device=dev.type, batch=args.batch, dtype=args.dtype,
                                      threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                                      clock=args.clock, progress=progress)
    out = pred.save(args.out or default_predictor_path(dev.type))
    rep = pred.fit_report
    print(f"latency predictor for {pred.device} ({pred.device_name}): {rep['kernels']} kernels from {rep['models']} "
          f"models in {time.perf_counter() - t0:.0f} s; overhead a={pred.overhead[0]:.3f} "
          f"b={pred.overhead[1]:.3f} ms/call c={pred.overhead[2]:.2f} ms; on the calibration models "
          f"{rep['fit_within_10pct']:.0%} within 10% (median error {rep['fit_median_abs_err']:.1%}); saved to {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from evaluators.latency_predictor import LatencyPredictor, default_predictor_path
    from nas.commands.profile import resolve_target
    from nas.errors import NasError

    tgt = resolve_target(args.target, args.img_size, build=False)
    if tgt.spec is None:
        raise NasError("the predictor works on genomes (preset:NAME or a genome JSON file), not timm models")
    pred = LatencyPredictor.load(args.predictor or default_predictor_path("cpu"))
    t = time.perf_counter()
    d = pred.predict_detail(tgt.spec)
    dt = time.perf_counter() - t
    if args.json:
        print(json.dumps(dict(target=tgt.label, latency_ms=d.ms, kernel_sum_ms=d.kernel_sum_ms, unseen_kernels=d.unseen,
                              by_part=d.by_part, device=pred.device, device_name=pred.device_name, batch=pred.batch,
                              predict_s=dt)))
        return 0
    print(f"{tgt.label}: predicted {d.ms:.2f} ms on {pred.device} ({pred.device_name}), batch {pred.batch}, "
          f"{pred.threads} thread(s); {d.unseen} kernel(s) estimated by regression (not measured); "
          f"predicted in {dt * 1e3:.1f} ms")
    return 0
