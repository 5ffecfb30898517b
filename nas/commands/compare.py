"""``nas compare SKELETON``: token mixers compared fairly at equal compute (STM-Evaluation's protocol).

SKELETON is ``preset:NAME`` or a genome JSON file. Every mixer is put into every stage of the
skeleton, its widths (and if needed depth) fitted to the FLOP budget, trained with one proxy
recipe over several seeds, and stored as a study; the table and an HTML plot show accuracy
(mean and spread over seeds) against FLOPs, parameters and latency, and which differences exceed
the seed spread (Welch's t-test, Holm-corrected). The logic lives in ``nas.compare``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

# STM-Evaluation's five spatial token mixers, by their names here: Swin's window attention, HaloNet's
# halo attention, PVT's spatial-reduction attention, a separable (depthwise) convolution standing in
# for ConvNeXt's 7x7 depthwise conv, and InternImage's DCNv3
DEFAULT_MIXERS = ("window", "halo", "sra", "sepconv", "dcnv3")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="compare token mixers in one skeleton at equal FLOPs, over several seeds",
        description="Put each mixer into every stage of SKELETON (preset:NAME or a genome JSON file), fit its "
                    "widths (and if needed depth) to the FLOP budget, train each with the same proxy recipe over "
                    "several seeds, store the runs as a study, and print/plot accuracy against FLOPs, params and "
                    "latency with the differences that exceed the seed spread (STM-Evaluation's protocol).")
    p.add_argument("skeleton", metavar="SKELETON", help="preset:NAME or a genome JSON file")
    p.add_argument("--mixers", default=",".join(DEFAULT_MIXERS),
                   help=f"comma-separated token mixers (default: {','.join(DEFAULT_MIXERS)})")
    p.add_argument("--flops", metavar="N", help="MACs budget per image, e.g. 5M (default: the skeleton's own)")
    p.add_argument("--tolerance", type=float, default=0.02, help="largest distance from the budget (default 0.02)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=3, help="proxy-training epochs (default 3)")
    p.add_argument("--batch-size", type=int, default=64, help="proxy-training batch size (default 64)")
    p.add_argument("--lr", type=float, default=2e-3, help="proxy-training learning rate (default 2e-3)")
    p.add_argument("--img-size", type=int, default=32, help="input side in pixels (default 32)")
    p.add_argument("--subset", type=int, default=None, help="at most this many images per split (default: all)")
    p.add_argument("--device", default="auto", help="training device: auto, cpu or cuda (default auto)")
    p.add_argument("--latency-device", default="cpu", help="latency device: cpu or cuda (default cpu)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--study", help="study name (default compare_<skeleton>)")
    p.add_argument("--storage", help="database URL (default sqlite:///studies/<study>.db)")
    p.add_argument("--html", metavar="PATH", help="plot file (default studies/<study>.html)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object instead of the table")
    return p


def _int_list(text: str, what: str) -> tuple[int, ...]:
    from nas.errors import NasError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise NasError(f"--{what} wants comma-separated integers like 0,1,2; got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from nas.commands.profile import resolve_target
    from nas.compare import CompareConfig, format_table, run_compare, write_html
    from nas.study import default_storage_for, parse_count, resolve_storage_url

    target = resolve_target(args.skeleton, build=False)
    mixers = tuple(m.strip() for m in args.mixers.split(",") if m.strip())
    cfg = CompareConfig(
        mixers=mixers, flops=parse_count(args.flops, "--flops") if args.flops else None, tolerance=args.tolerance,
        seeds=_int_list(args.seeds, "seeds"), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        img_size=args.img_size, subset=args.subset, device=args.device,
        latency_device=None if args.no_latency else args.latency_device)
    label = args.skeleton.split(":", 1)[1] if args.skeleton.startswith("preset:") else Path(args.skeleton).stem
    study = args.study or "compare_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    url = resolve_storage_url(args.storage, Path.cwd()) if args.storage else default_storage_for(study)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, flush=True))
    res = run_compare(target.spec, cfg, url, study, skeleton_label=args.skeleton, log=log)
    html = write_html(res, args.html or Path("studies") / f"{study}.html")
    if args.json:
        print(json.dumps({**res.to_dict(), "html": str(html)}, indent=1))
    else:
        print()
        print(format_table(res))
        print(f"plot: {html}")
    return 0
