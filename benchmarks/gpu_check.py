"""The GPU check: the CUDA paths measured on a real GPU in one short run (under 8 minutes).

    python benchmarks/gpu_check.py [--out FILE] [--calib N] [--genomes N] [--img-size 224]
                                   [--batch 16] [--dtype float32] [--budget-s 450]

On a CUDA machine it measures, each section timed and recorded even if another fails:

1. ``latency``: a ``HybridPredictor`` calibrated there (``--calib`` random genomes, kernels and
   whole models timed with CUDA events) against the CUDA-event latency of ``--genomes`` other
   random genomes: share within +-10%, median |error|, for the kernel sum and the hybrid, and
   how often the measurement fell inside the hybrid's interval.
2. ``throughput``: ``benchmarks/train_throughput.py`` on the GPU (ProxyTrainer in bf16 against
   a plain DataLoader loop with the same bf16 autocast; the ratio), and its training FLOP/s as
   MFU against the bf16 ``torch.mm`` peak measured in the same run (and the fp32 one it reports).
3. ``oom``: a trial that runs out of memory (the "large" candidate with every training image in
   one batch under a per-process memory cap of ``--oom-cap-gib``) must end ``status="oom"``, and
   a normal trial after it (cap lifted) must end ``"ok"`` with the memory released.

Without a CUDA device it prints one line saying so and writes the JSON with
``summary.status = "skipped"`` and the reason (exit status 0): nothing is measured on the CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._common import machine_info, write_json  # noqa: E402

GIB = 1024 ** 3


def no_cuda_reason() -> str | None:
    """Why this machine cannot run the check (None when a CUDA device is usable)."""
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        return (f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build "
                f"{built}, {torch.cuda.device_count()} device(s) visible)")
    return None


def latency_section(device: str, calib: int, genomes: int, img_size: int, batch: int, dtype: str,
                    repeats: int = 9, warmup: int = 3) -> dict[str, Any]:
    """Hybrid predictor calibrated on ``device`` vs measured latency of held-out genomes."""
    from evaluators.latency import measure_latency
    from evaluators.latency_predictor import HybridPredictor
    from evaluators.random_genomes import random_genome

    kw = dict(batch=batch, dtype=dtype, threads=1, warmup=warmup, repeats=repeats)
    specs = [random_genome(random.Random(1000 + i), img_size=img_size) for i in range(calib)]
    pred = HybridPredictor.calibrate(specs, device=device, min_models=min(10, calib), **kw)
    rows = []
    for i in range(genomes):
        spec = random_genome(random.Random(5000 + i), img_size=img_size)
        pred.measure_kernels(spec)
        iv = pred.predict_interval(spec)
        m = measure_latency(spec, device=device, **kw)
        rows.append(dict(genome=spec.summary(), measured_ms=m.median_ms, clock=m.clock, hybrid_ms=iv.ms,
                         kernel_sum_ms=iv.kernel_ms, lo_ms=iv.lo, hi_ms=iv.hi,
                         err_hybrid=iv.ms / m.median_ms - 1, err_kernel_sum=iv.kernel_ms / m.median_ms - 1))

    def share(key: str) -> float:
        return sum(abs(r[key]) <= 0.10 for r in rows) / len(rows)

    return dict(
        rows=rows, fit_report=pred.fit_report, device_name=pred.device_name,
        within_10pct_share=share("err_hybrid"), within_10pct_share_kernel_sum=share("err_kernel_sum"),
        median_abs_err=statistics.median(abs(r["err_hybrid"]) for r in rows),
        median_abs_err_kernel_sum=statistics.median(abs(r["err_kernel_sum"]) for r in rows),
        interval_coverage=sum(r["lo_ms"] <= r["measured_ms"] <= r["hi_ms"] for r in rows) / len(rows),
        clock=rows[0]["clock"] if rows else None,
    )


def throughput_section(img_size: int, batch: int, steps: int, reps: int, workers: int) -> dict[str, Any]:
    """``train_throughput.py`` on the GPU, plus MFU against the bf16 matmul peak."""
    from benchmarks import train_throughput as tt

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "train_throughput.json"
        tt.main(["--device", "cuda", "--img-size", str(img_size), "--batch", str(batch), "--steps", str(steps),
                 "--reps", str(reps), "--workers", str(workers), "--out", str(out)])
        doc = json.loads(out.read_text())
    dev = torch.device("cuda")
    bf16 = tt.matmul_samples(dev, 8192, reps=10, dtype=torch.bfloat16)
    peak_bf16 = statistics.median(bf16)
    rows = doc["rows"]
    for r in rows:
        r["mfu_bf16_peak"] = r["train_gflop_s"] * 1e9 / peak_bf16
    s = doc["summary"]
    return dict(rows=rows, train_throughput_summary=s, matmul_peak_bf16_tflop_s=peak_bf16 / 1e12,
                ratio_vs_plain_min=s["min_ratio_vs_plain_loop"],
                mfu_medium_bf16=next(r["mfu_bf16_peak"] for r in rows if r["model"] == "medium"),
                mfu_max_bf16=max(r["mfu_bf16_peak"] for r in rows))


def oom_section(cap_gib: float, img_size: int = 64) -> dict[str, Any]:
    """An out-of-memory trial under a memory cap, then a normal trial: 'oom' then 'ok'."""
    from benchmarks.train_throughput import candidates
    from evaluators.data import DataSpec, load_dataset
    from evaluators.proxy import ProxyConfig, ProxyTrainer
    from search_space import build_model

    data = load_dataset(DataSpec("digits", img_size=img_size))
    specs = candidates(img_size, data.num_classes)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GIB / total))
    try:
        torch.manual_seed(0)
        big = ProxyTrainer(ProxyConfig(steps=2, batch_size=1_000_000, eval_batch_size=1_000_000, device="cuda",
                                       precision="bf16")).fit(build_model(specs["large"]), data)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    after_oom = torch.cuda.memory_allocated()
    torch.manual_seed(0)
    normal = ProxyTrainer(ProxyConfig(steps=5, batch_size=64, device="cuda", precision="bf16")).fit(
        build_model(specs["small"]), data)
    return dict(oom_status=big.status, oom_reason=big.reason, recovered_status=normal.status,
                recovered_reason=normal.reason, recovered_accuracy=normal.accuracy,
                allocated_after_oom_mib=after_oom / 2 ** 20, cap_gib=cap_gib,
                oom_recovered=big.status == "oom" and normal.status == "ok")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_check.json"))
    ap.add_argument("--calib", type=int, default=30, help="calibration genomes of the latency predictor")
    ap.add_argument("--genomes", type=int, default=20, help="held-out genomes whose latency is measured")
    ap.add_argument("--img-size", type=int, default=224, help="latency image size")
    ap.add_argument("--batch", type=int, default=16, help="latency batch size")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="latency dtype")
    ap.add_argument("--train-img-size", type=int, default=32)
    ap.add_argument("--train-batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    ap.add_argument("--oom-cap-gib", type=float, default=1.0, help="memory cap of the out-of-memory trial")
    ap.add_argument("--budget-s", type=float, default=450, help="sections not started by then are skipped")
    args = ap.parse_args(argv)

    reason = no_cuda_reason()
    if reason is not None:
        path = write_json(args.out, {"status": "skipped", "reason": reason, "cuda_available": False}, [],
                          machine=machine_info("cpu"), args=vars(args))
        print(f"gpu_check skipped: {reason}; wrote {path}")
        return 0

    t0 = time.perf_counter()
    sections: dict[str, Any] = {}
    plan = [
        ("latency", lambda: latency_section("cuda", args.calib, args.genomes, args.img_size, args.batch, args.dtype)),
        ("throughput", lambda: throughput_section(args.train_img_size, args.train_batch, args.steps, args.reps,
                                                  args.workers)),
        ("oom", lambda: oom_section(args.oom_cap_gib)),
    ]
    for name, fn in plan:
        if time.perf_counter() - t0 > args.budget_s:
            sections[name] = {"status": "skipped", "reason": f"time budget of {args.budget_s:.0f} s spent"}
            continue
        t = time.perf_counter()
        try:
            sections[name] = {"status": "ok", **fn()}
        except Exception as e:  # noqa: BLE001 - record it, run the other sections
            sections[name] = {"status": "error", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                              "traceback": traceback.format_exc()[-4000:]}
        sections[name]["seconds"] = time.perf_counter() - t
        print(f"{name}: {sections[name]['status']} in {sections[name]['seconds']:.0f} s", file=sys.stderr)
        torch.cuda.empty_cache()

    lat, thr, oom = sections["latency"], sections["throughput"], sections["oom"]
    wall = time.perf_counter() - t0
    summary = {
        "status": "ok" if all(s["status"] == "ok" for s in sections.values()) else "partial",
        "device": torch.cuda.get_device_name(0), "date_utc": time.strftime("%Y-%m-%d", time.gmtime()),
        "latency_within_10pct_share": lat.get("within_10pct_share"),
        "latency_within_10pct_share_kernel_sum": lat.get("within_10pct_share_kernel_sum"),
        "latency_median_abs_err": lat.get("median_abs_err"),
        "latency_median_abs_err_kernel_sum": lat.get("median_abs_err_kernel_sum"),
        "latency_interval_coverage": lat.get("interval_coverage"),
        "latency_genomes": args.genomes, "latency_img_size": args.img_size, "latency_batch": args.batch,
        "train_ratio_vs_plain_min": thr.get("ratio_vs_plain_min"),
        "mfu_medium_bf16": thr.get("mfu_medium_bf16"), "matmul_peak_bf16_tflop_s": thr.get("matmul_peak_bf16_tflop_s"),
        "oom_status": oom.get("oom_status"), "recovered_status": oom.get("recovered_status"),
        "oom_recovered": oom.get("oom_recovered"),
        "wall_s": wall, "under_8_min": wall < 480,
    }
    rows = [dict(section="latency", **r) for r in lat.get("rows", [])]
    rows += [dict(section="throughput", **r) for r in thr.get("rows", [])]
    path = write_json(args.out, summary, rows, machine=machine_info("cuda"), sections=sections, args=vars(args))
    print(json.dumps(summary))
    print(f"wrote {path}")
    return 0 if summary["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
