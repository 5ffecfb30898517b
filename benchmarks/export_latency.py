"""Does an exported model run as fast as the model the search measured? (issue: export, 3% goal)

For each genome: build the model the way the search does (``search_space.build_model``; it is
what ``evaluators.latency`` times), export it with its weights (``nas.export.export_genome``),
and load it back twice -- ``timm.create_model("local-dir:DIR", pretrained=True)`` and through
the standalone ``DIR/<name>_model.py``. The three are timed interleaved in one process: each
repeat times one forward of every variant (rotating which goes first), so drift hits all alike.
Reported per genome: each variant's median CPU ms (the compute thread's own time: on a machine
shared with other jobs, wall-clock medians flip between scheduling modes) and the ratio of those
medians -- the headline -- plus wall-clock ratios of medians and of minima. On CUDA the headline
is the wall-clock (synchronised) ratio.

    .venv/bin/python benchmarks/export_latency.py --quick --out benchmarks/results/export_latency.json
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402


def genomes(quick: bool):
    from search_space import PRESETS, ArchSpec, HeadSpec, StageSpec, StemSpec

    small = {
        "deit-like@64": ArchSpec(StemSpec("patchify", 8), (StageSpec(4, 96, "attention", {"num_heads": 3}, pos="abs"),),
                                 HeadSpec("cls"), num_classes=100, img_size=64),
        "swin-like@64": ArchSpec(StemSpec("patchify", 4, {"norm": True}), (
            StageSpec(2, 48, "window", {"num_heads": 2, "window_size": 4}, pos="rel_bias"),
            StageSpec(2, 96, "window", {"num_heads": 4, "window_size": 4}, pos="rel_bias", downsample="patch_merging"),
        ), num_classes=100, img_size=64),
        "caformer-like@64": ArchSpec(StemSpec("overlap", 4, {"kernel_size": 7}), (
            StageSpec(2, 48, "sepconv", layer_scale=1e-5),
            StageSpec(2, 96, "attention", {"num_heads": 3, "qkv_bias": False, "proj_bias": False}, downsample="conv"),
        ), HeadSpec("avg", mlp_ratio=2.0), num_classes=100, img_size=64),
        "pvt-like@64": ArchSpec(StemSpec("overlap", 4, {"kernel_size": 7}), (
            StageSpec(2, 48, "sra", {"num_heads": 1, "sr_ratio": 4}, pos="cpe", mlp="convffn"),
            StageSpec(2, 96, "sra", {"num_heads": 2, "sr_ratio": 2}, mlp="convffn", downsample="conv"),
        ), num_classes=100, img_size=64),
    }
    if quick:
        return small
    return {**small, "deit_tiny@224": PRESETS["deit_tiny"], "pvt_v2_b0@224": PRESETS["pvt_v2_b0"]}


def time_once(model: torch.nn.Module, x: torch.Tensor, device: str) -> tuple[float, float]:
    """One forward: ``(wall ms, CPU ms of this thread)``. With one intra-op thread the CPU time is
    the model's own work, unaffected by the time the OS gives other processes (a shared machine)."""
    if device == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.thread_time()
    model(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - w0) * 1e3, (time.thread_time() - c0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small genomes, fewer repeats (< 2 min)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (200 if args.quick else 300)

    import timm

    from nas.export import export_genome
    from search_space import build_model

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="export_latency-"))
    print(f"{'':18} {'median CPU ms per forward':^26} {'CPU ratio':^17} | {'wall ratio (median)':^17} "
          f"{'wall ratio (min)':^17}")
    print(f"{'genome':18} {'search':>8} {'localdir':>8} {'standal.':>8} {'localdir':>8} {'standal.':>8} | "
          f"{'localdir':>8} {'standal.':>8} {'localdir':>8} {'standal.':>8}")
    for i, (label, spec) in enumerate(genomes(args.quick).items()):
        torch.manual_seed(i)
        search = build_model(spec).eval()
        name = f"attnnas_latbench_{i}"
        out = export_genome(spec, tmp / name, name=name, weights=search.state_dict(), register=False)
        local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        sys.path.insert(0, str(out))
        importlib.import_module(f"{name}_model")
        standalone = timm.create_model(name, pretrained=True).eval()
        variants = {"search": search, "local_dir": local, "standalone": standalone}
        x = torch.randn(args.batch, spec.in_chans, spec.img_size, spec.img_size)
        with torch.inference_mode():
            ref = search(x)
            assert all((m(x) - ref).abs().max() <= 1e-6 for m in (local, standalone)), "outputs differ"
            if args.device == "cuda":
                x = x.cuda()
                for m in variants.values():
                    m.cuda()
            for m in variants.values():  # warm-up
                for _ in range(3):
                    m(x)
            # one forward per sample, variants alternating call by call (rotating who goes first):
            # contention on a shared machine comes in bursts longer than a call, so it hits all alike
            wall = {k: [] for k in variants}
            cpu = {k: [] for k in variants}
            keys = list(variants)
            for r in range(repeats):
                order = keys[r % len(keys):] + keys[: r % len(keys)]
                for k in order:
                    w, c = time_once(variants[k], x, args.device)
                    wall[k].append(w)
                    cpu[k].append(c)
        exported = ("local_dir", "standalone")
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        low = {k: min(v) for k, v in wall.items()}
        ratio = {k: med[k] / med["search"] for k in exported}
        ratio_cpu = {k: med_cpu[k] / med_cpu["search"] for k in exported}
        ratio_min = {k: low[k] / low["search"] for k in exported}
        headline = ratio_cpu if args.device == "cpu" else ratio
        rows.append(dict(genome=label, summary=spec.summary(), img_size=spec.img_size, batch=args.batch,
                         repeats=repeats, headline_ratio=headline, median_wall_ms=med, median_cpu_ms=med_cpu,
                         min_wall_ms=low, ratio_of_median_wall=ratio, ratio_of_median_cpu=ratio_cpu,
                         ratio_of_min_wall=ratio_min))
        print(f"{label:18} {med_cpu['search']:8.3f} {med_cpu['local_dir']:8.3f} {med_cpu['standalone']:8.3f} "
              f"{ratio_cpu['local_dir']:8.4f} {ratio_cpu['standalone']:8.4f} | {ratio['local_dir']:8.4f} "
              f"{ratio['standalone']:8.4f} {ratio_min['local_dir']:8.4f} {ratio_min['standalone']:8.4f}")
    heads = [r["headline_ratio"][k] for r in rows for k in ("local_dir", "standalone")]
    walls = [r["ratio_of_median_wall"][k] for r in rows for k in ("local_dir", "standalone")]
    minima = [r["ratio_of_min_wall"][k] for r in rows for k in ("local_dir", "standalone")]
    worst = max(abs(q - 1) for q in heads)
    summary = dict(
        headline=f"ratio of median {'CPU' if args.device == 'cpu' else 'wall'} time, exported / search model",
        max_abs_ratio_deviation=round(worst, 4), within_3pct=worst <= 0.03,
        min_ratio=round(min(heads), 4), max_ratio=round(max(heads), 4),
        max_abs_deviation_median_wall=round(max(abs(q - 1) for q in walls), 4),
        max_abs_deviation_min_wall=round(max(abs(q - 1) for q in minima), 4), genomes=len(rows))
    print(f"\nexported / search ({summary['headline']}): {summary['min_ratio']:.4f} .. {summary['max_ratio']:.4f}; "
          f"worst {100 * worst:.2f}% ({'within' if worst <= 0.03 else 'NOT within'} 3%). Wall clock: medians within "
          f"{100 * summary['max_abs_deviation_median_wall']:.1f}%, minima within "
          f"{100 * summary['max_abs_deviation_min_wall']:.1f}%")
    if args.out:
        write_json(args.out, summary, rows, machine=machine_info(args.device),
                   method="one forward per sample, variants alternating call by call with rotating order, in one "
                          "process; headline: ratio of per-variant median thread CPU time (cpu) or wall time (cuda)")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
