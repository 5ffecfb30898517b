"""FLOP counter fidelity: our GMACs vs the published figures vs plain fvcore, and presets vs timm.

    .venv/bin/python benchmarks/flops.py [--quick] [--out FILE]

For ten timm models at 224 px: ``count_flops`` with timm's fused attention on and off, plain
fvcore (no extra handles: SDPA counted as zero) and the published GMACs. For every preset: its
GMACs and parameters next to the timm model it reproduces.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine_info, write_json  # noqa: E402

PUBLISHED = {
    "deit_tiny_patch16_224": 1.3, "deit_small_patch16_224": 4.6, "swin_tiny_patch4_window7_224": 4.5,
    "pvt_v2_b1": 2.1, "poolformer_s12": 1.8, "convformer_s18": 3.9, "caformer_s18": 4.1,
    "levit_128s": 0.305, "pit_s_224": 2.9, "convnext_tiny": 4.5,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="three models, no presets")
    ap.add_argument("--out", default="benchmarks/results/flops.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import timm
    import timm.layers.config as cfg

    from evaluators import count_flops, count_params
    from evaluators.flops import plain_fvcore_macs
    from search_space import PRESETS, build_model
    from search_space.presets import PRESET_TIMM

    names = list(PUBLISHED)[:3] if args.quick else list(PUBLISHED)
    rows = []
    old = cfg._USE_FUSED_ATTN
    print(f"{'model':<30}{'published':>10}{'ours':>9}{'unfused':>9}{'fvcore':>9}{'ours/pub':>10}{'fvcore/pub':>11}")
    for name in names:
        counts, models = {}, {}
        for fused in (True, False):
            cfg.set_fused_attn(fused)
            models[fused] = model = timm.create_model(name)
            counts[fused] = count_flops(model)
        cfg._USE_FUSED_ATTN = old
        plain = plain_fvcore_macs(models[True]) / 1e9  # timm's default (fused) attention path
        pub = PUBLISHED[name]
        r = dict(model=name, published=pub, ours=counts[True].gmacs, ours_unfused=counts[False].gmacs,
                 plain_fvcore=plain, ratio_ours=counts[True].gmacs / pub, ratio_fvcore=plain / pub,
                 uncounted=counts[True].uncounted, params_m=count_params(model) / 1e6)
        rows.append(r)
        print(f"{name:<30}{pub:>10}{r['ours']:>9.3f}{r['ours_unfused']:>9.3f}{plain:>9.3f}{r['ratio_ours']:>10.3f}"
              f"{r['ratio_fvcore']:>11.3f}")
    presets = []
    if not args.quick:
        print(f"\n{'preset':<16}{'timm model':<30}{'GMACs':>8}{'timm':>8}{'ratio':>8}{'Mparams':>9}{'timm':>8}")
        for p, spec in PRESETS.items():
            t = time.perf_counter()
            ours = count_flops(build_model(spec))
            ref_model = timm.create_model(PRESET_TIMM[p])
            ref = count_flops(ref_model)
            pp, rp = count_params(build_model(spec)) / 1e6, count_params(ref_model) / 1e6
            presets.append(dict(preset=p, timm=PRESET_TIMM[p], gmacs=ours.gmacs, timm_gmacs=ref.gmacs,
                                ratio=ours.total / ref.total, mparams=pp, timm_mparams=rp,
                                seconds=time.perf_counter() - t))
            print(f"{p:<16}{PRESET_TIMM[p]:<30}{ours.gmacs:>8.3f}{ref.gmacs:>8.3f}{ours.total / ref.total:>8.3f}"
                  f"{pp:>9.2f}{rp:>8.2f}")
    summary = dict(
        models=len(rows),
        max_abs_rel_err_vs_published=max(abs(r["ratio_ours"] - 1) for r in rows),
        all_within_published_window=all(_within(r["published"], r["ours"]) for r in rows),
        unfused_equals_fused=all(abs(r["ours"] - r["ours_unfused"]) < 1e-6 for r in rows),
        deit_tiny_ours=next((r["ours"] for r in rows if r["model"] == "deit_tiny_patch16_224"), None),
        deit_tiny_plain_fvcore=next((r["plain_fvcore"] for r in rows if r["model"] == "deit_tiny_patch16_224"), None),
        presets_max_abs_rel_err_vs_timm=max((abs(p["ratio"] - 1) for p in presets), default=None),
    )
    path = write_json(args.out, summary, rows, machine=machine_info("cpu"), presets=presets)
    print(f"wrote {path}")
    return 0


def _within(pub: float, ours: float) -> bool:
    s = str(pub)
    half = 0.5 * 10 ** -(len(s.split(".")[1]) if "." in s else 0)
    return min(pub * 0.97, pub - half) <= ours <= max(pub * 1.03, pub + half)


if __name__ == "__main__":
    sys.exit(main())
