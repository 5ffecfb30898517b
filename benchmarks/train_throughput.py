"""Proxy-trainer throughput vs. a plain PyTorch loop over a DataLoader, and MFU.

For a small, a medium and a large candidate of the quickstart space (digits at 16 px), train
the same initial weights for the same number of steps, batch size and precision with

* ``ProxyTrainer`` (data on the device as uint8, batched by indexing, crop/flip by one gather,
  no per-step host sync), timed over the whole ``fit`` except validation (setup included);
* a plain loop as it is usually written: a ``Dataset`` applying torchvision's ``RandomCrop``
  (+ ``RandomHorizontalFlip`` where the data allows it) per image, a ``DataLoader``
  (shuffle, drop_last, ``--workers`` workers), AdamW with the same groups and schedule, the
  same clipping and autocast, and ``loss.item()`` per step for the running loss.

Measurements are interleaved (ours/plain alternate, order flipped every repetition) and the
ratio is the median of per-repetition ratios. MFU = training FLOP/s (2 FLOPs per MAC,
3 x forward MACs per trained image) / this machine's fp32 ``torch.mm`` peak measured in the
same run with the same thread count.

    python benchmarks/train_throughput.py [--quick] [--out FILE] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._common import machine_info, write_json  # noqa: E402
from evaluators.data import DataSpec, LoadedData, load_dataset  # noqa: E402
from evaluators.proxy import ProxyConfig, ProxyTrainer, cosine_lr, forward_macs, param_groups  # noqa: E402
from search_space import build_model  # noqa: E402
from search_space.genome import ArchSpec, StageSpec, StemSpec  # noqa: E402


def candidates(img: int, num_classes: int = 10) -> dict[str, ArchSpec]:
    """Three points of the quickstart space (studies/quickstart.toml), small to large."""
    s = StageSpec
    return {
        # isotropic ViT: patch 4, 2 x attention @32, sin-cos positions
        "small": ArchSpec(stem=StemSpec("patchify", 4), stages=(
            s(depth=2, dim=32, mixer="attention", mixer_knobs={"num_heads": 2}, pos="sincos", mlp_ratio=2.0),),
            num_classes=num_classes, img_size=img),
        # hybrid pyramid: conv stem, sepconv @32 then attention @64, conditional positions
        "medium": ArchSpec(stem=StemSpec("conv", 2), stages=(
            s(depth=2, dim=32, mixer="sepconv", mixer_knobs={"kernel_size": 3}, pos="cpe"),
            s(depth=2, dim=64, mixer="attention", mixer_knobs={"num_heads": 2}, pos="cpe", downsample="conv")),
            num_classes=num_classes, img_size=img),
        # Swin-like pyramid: patch 2, windows @48 then global attention @96, relative bias
        "large": ArchSpec(stem=StemSpec("patchify", 2), stages=(
            s(depth=2, dim=48, mixer="window", mixer_knobs={"num_heads": 2, "window_size": 4}, pos="rel_bias"),
            s(depth=2, dim=96, mixer="attention", mixer_knobs={"num_heads": 4}, pos="rel_bias",
              downsample="patch_merging")),
            num_classes=num_classes, img_size=img),
    }


def matmul_samples(device: torch.device, n: int, reps: int = 8, dtype: torch.dtype = torch.float32) -> list[float]:
    """``torch.mm`` throughputs in FLOP/s (2 n^3 per product) at ``dtype`` (default fp32), one per repetition."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    out = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        out.append(2 * n ** 3 / (time.perf_counter() - t))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AugmentedImages(torch.utils.data.Dataset):
    """The plain way: per-image torchvision transforms on normalised float tensors."""

    def __init__(self, data: LoadedData, pad: int, flip: bool) -> None:
        from torchvision.transforms import v2

        self.x = data.normalize(data.train_x).contiguous()  # (N, C, H, W) float32
        self.y = data.train_y
        ts = [v2.RandomCrop(self.x.shape[-1], padding=pad)] if pad else []
        ts += [v2.RandomHorizontalFlip()] if flip else []
        self.t = v2.Compose(ts)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.t(self.x[i]), self.y[i]


def plain_loop(model: nn.Module, ds: AugmentedImages, cfg: ProxyConfig, device: torch.device, workers: int) -> float:
    """Images/s of a textbook DataLoader training loop, ``cfg.steps`` steps."""
    bf16 = device.type == "cuda"
    model.to(device).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                            fused=device.type == "cuda")
    total = cfg.steps
    warmup = round(cfg.warmup_frac * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, total, warmup, cfg.min_lr_ratio))
    g = torch.Generator().manual_seed(cfg.seed)
    _sync(device)
    t0 = time.perf_counter()
    dl = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                     num_workers=workers, generator=g, pin_memory=device.type == "cuda",
                                     persistent_workers=False)
    step, running = 0, 0.0
    while step < total:
        for x, y in dl:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            running += loss.item()
            step += 1
            if step == total:
                break
    _sync(device)
    return total * cfg.batch_size / (time.perf_counter() - t0)


def ours(model: nn.Module, data: LoadedData, cfg: ProxyConfig, macs: int | None) -> float:
    r = ProxyTrainer(cfg).fit(model, data, flops_per_image=macs)
    if r.status != "ok":
        raise RuntimeError(f"proxy run failed: {r.reason}")
    return r.images / (r.wall_time_s - r.eval_time_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repetitions (< 2 min)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/train_throughput.json"))
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both loops and the peak)")
    ap.add_argument("--img-size", type=int, default=16, help="the quickstart resolution")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="training steps per measurement")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain loop")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    steps = args.steps or (8 if args.quick else 24)
    reps = args.reps or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))

    data = load_dataset(DataSpec("digits", img_size=args.img_size))
    cfg = ProxyConfig(steps=steps, batch_size=args.batch, device=str(device), count_flops=False)
    pad = data.crop_pad
    plain_ds = AugmentedImages(data, pad, data.flip_ok)
    mm_n = 1024 if args.quick else 2048
    peaks = matmul_samples(device, mm_n)

    models = {}
    for name, spec in candidates(args.img_size, data.num_classes).items():
        torch.manual_seed(0)
        m = build_model(spec)
        models[name] = (m, forward_macs(m, spec.in_chans, args.img_size), sum(p.numel() for p in m.parameters()))
        # warm-up (allocator, kernels) for both loops, not timed
        ours(copy.deepcopy(m), data, ProxyConfig(steps=2, batch_size=args.batch, device=str(device),
                                                count_flops=False), None)
        plain_loop(copy.deepcopy(m), plain_ds, ProxyConfig(steps=2, batch_size=args.batch), device, args.workers)

    meas: dict[str, dict[str, list[float]]] = {n: {"ours": [], "plain": []} for n in models}
    for rep in range(reps):
        for name, (m, macs, _) in models.items():
            order = ("ours", "plain") if rep % 2 == 0 else ("plain", "ours")
            for which in order:
                if which == "ours":
                    meas[name]["ours"].append(ours(copy.deepcopy(m), data, cfg, macs))
                else:
                    meas[name]["plain"].append(plain_loop(copy.deepcopy(m), plain_ds, cfg, device, args.workers))
        peaks += matmul_samples(device, mm_n)
    # Two peaks: the median sample shares the run's CPU contention with the training
    # measurements (MFU = median img/s against it); the best sample is the closest to the
    # hardware's capability (MFU_best = best img/s against it).
    peak, best_peak = statistics.median(peaks), max(peaks)

    rows = []
    for name, (_m, macs, n_params) in models.items():
        o, p = meas[name]["ours"], meas[name]["plain"]
        ratios = [a / b for a, b in zip(o, p, strict=False)]
        ips = statistics.median(o)
        flops_s = 2 * 3 * (macs or 0) * ips
        rows.append({
            "model": name, "summary": candidates(args.img_size)[name].summary(), "macs": macs, "params": n_params,
            "ours_img_s": ips, "plain_img_s": statistics.median(p), "ratio": statistics.median(ratios),
            "ratios": ratios, "ours_all": o, "plain_all": p,
            "train_gflop_s": flops_s / 1e9, "mfu": flops_s / peak,
            "mfu_best": 2 * 3 * (macs or 0) * max(o) / best_peak,
        })
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, img {args.img_size}, "
          f"{steps} steps x {reps} reps; load avg {os.getloadavg()[0]:.1f}; fp32 mm ({mm_n}^2) median {peak / 1e9:.1f}, best {best_peak / 1e9:.1f} GFLOP/s")
    print(f"{'model':<8}{'MACs':>10}{'params':>9}{'ours img/s':>12}{'plain img/s':>13}{'ratio':>7}"
          f"{'GFLOP/s':>9}{'MFU':>7}{'MFU best':>9}")
    for r in rows:
        print(f"{r['model']:<8}{r['macs'] / 1e6:>9.2f}M{r['params'] / 1e3:>8.0f}k{r['ours_img_s']:>12.0f}"
              f"{r['plain_img_s']:>13.0f}{r['ratio']:>7.2f}{r['train_gflop_s']:>9.2f}{100 * r['mfu']:>6.1f}%"
              f"{100 * r['mfu_best']:>8.1f}%")
    summary = {
        "min_ratio_vs_plain_loop": min(r["ratio"] for r in rows),
        **{f"ratio_{r['model']}": r["ratio"] for r in rows},
        **{f"mfu_{r['model']}": r["mfu"] for r in rows},
        "mfu": next(r["mfu"] for r in rows if r["model"] == "medium"),
        "mfu_best_medium": next(r["mfu_best"] for r in rows if r["model"] == "medium"),
        "matmul_peak_gflop_s": peak / 1e9,
        "matmul_best_gflop_s": best_peak / 1e9,
        "goal_ratio_met": all(r["ratio"] >= 1.0 for r in rows),
    }
    path = write_json(args.out, summary, rows, machine=machine_info(str(device)),
                      load_avg_1m=os.getloadavg()[0],
                      settings={"steps": steps, "reps": reps, "batch": args.batch, "img_size": args.img_size,
                                "workers": args.workers, "quick": args.quick, "dataset": "digits",
                                "crop_pad": pad, "flip": data.flip_ok})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
