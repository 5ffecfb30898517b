"""Screening throughput: FLOPs + params of random genomes without weights vs full-weight counting.

    .venv/bin/python benchmarks/screening.py [--quick] [--n 200] [--img-size 224] [--out FILE]

Three ways to cost the same stream of random genomes of the default (core-mixer) space at
ImageNet scale, interleaved genome by genome so machine load affects all alike:

* ``screen`` (stream): ``evaluators.screen`` with its kernel cache starting empty, as in a search;
* ``screen`` (cold): the kernel cache cleared before every genome (worst case: nothing reused);
* full: ``build_model`` with real weights + ``count_flops`` (fvcore trace) + ``count_params``,
  measured on every ``--full-every``-th genome (it is slow) and checked equal to ``screen``.

Reports candidates per second for each and the ratios.
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
    ap.add_argument("--n", type=int, default=200, help="genomes in the stream")
    ap.add_argument("--full-every", type=int, default=10, help="full-weight count on every k-th genome")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/screening.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.full_every = 40, 10
    torch.set_num_threads(args.threads)

    from evaluators import count_flops, count_params, screen
    from evaluators.random_genomes import random_genome
    from evaluators.screening import _CACHE, clear_cache
    from search_space import build_model

    rng = random.Random(args.seed)
    specs = [random_genome(rng, img_size=args.img_size) for _ in range(args.n)]
    screen(specs[0])  # import/first-call costs out of the timings
    clear_cache()

    stream_s, cold_s, full_s, rows, mismatches = [], [], [], [], 0
    stream_cache: dict = {}
    for i, spec in enumerate(specs):
        # stream: restore the stream's cache, time, keep it
        _CACHE.clear()
        _CACHE.update(stream_cache)
        t = time.perf_counter()
        costs = screen(spec)
        stream_s.append(time.perf_counter() - t)
        stream_cache = dict(_CACHE)
        # cold: nothing cached
        clear_cache()
        t = time.perf_counter()
        screen(spec)
        cold_s.append(time.perf_counter() - t)
        row = dict(i=i, genome=spec.summary(), gmacs=costs.flops / 1e9, mparams=costs.params / 1e6,
                   stream_ms=stream_s[-1] * 1e3, cold_ms=cold_s[-1] * 1e3)
        if i % args.full_every == 0:
            t = time.perf_counter()
            model = build_model(spec)
            fc = count_flops(model, (3, args.img_size, args.img_size))
            n_params = count_params(model)
            full_s.append(time.perf_counter() - t)
            del model
            row["full_ms"] = full_s[-1] * 1e3
            row["equal"] = fc.total == costs.flops and n_params == costs.params
            mismatches += not row["equal"]
        rows.append(row)

    def rate(ts: list[float]) -> float:
        return len(ts) / sum(ts)

    full_per = statistics.median(full_s)
    summary = dict(
        genomes=args.n, img_size=args.img_size,
        screen_stream_per_s=rate(stream_s), screen_cold_per_s=rate(cold_s), full_weight_per_s=1 / full_per,
        screen_stream_median_ms=statistics.median(stream_s) * 1e3, screen_cold_median_ms=statistics.median(cold_s) * 1e3,
        full_weight_median_ms=full_per * 1e3,
        speedup_stream_vs_full=full_per / (sum(stream_s) / len(stream_s)),
        speedup_cold_vs_full=full_per / (sum(cold_s) / len(cold_s)),
        full_checked=len(full_s), mismatches=mismatches, kernels_cached=len(stream_cache), goal_per_s=20,
    )
    print(f"{'method':<34}{'cand/s':>10}{'median ms':>12}{'vs full':>10}")
    print("-" * 66)
    print(f"{'screen (stream, cache from empty)':<34}{summary['screen_stream_per_s']:>10.1f}"
          f"{summary['screen_stream_median_ms']:>12.1f}{summary['speedup_stream_vs_full']:>9.1f}x")
    print(f"{'screen (cold, no cache)':<34}{summary['screen_cold_per_s']:>10.1f}"
          f"{summary['screen_cold_median_ms']:>12.1f}{summary['speedup_cold_vs_full']:>9.1f}x")
    print(f"{'full weights + fvcore trace':<34}{summary['full_weight_per_s']:>10.2f}{full_per * 1e3:>12.1f}{1:>9.1f}x")
    print(f"{args.n} genomes at {args.img_size}px; {len(full_s)} checked against the full count, "
          f"{mismatches} mismatch(es); {len(stream_cache)} distinct kernels")
    path = write_json(args.out, summary, rows, machine=machine_info("cpu"), args=vars(args))
    print(f"wrote {path}")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
