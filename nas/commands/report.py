"""``nas report STUDY --out report.html``: the dashboard's views as one self-contained HTML file."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="write the dashboard's views as one self-contained HTML file",
        description="Write the Pareto front (with reference models), 3D front, hypervolume, front "
                    "composition, parameter importance, the front members' architectures and the trial "
                    "table to one HTML file with plotly.js inlined (opens offline).")
    p.add_argument("study", metavar="STUDY", help="study name, or a study file (studies/x.toml)")
    p.add_argument("--storage", help="database URL (default: the study file's, else sqlite:///studies/STUDY.db)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--x", default="flops", choices=["accuracy", "flops", "latency_ms", "params"])
    p.add_argument("--y", default="accuracy", choices=["accuracy", "flops", "latency_ms", "params"])
    p.add_argument("--references", default=None, metavar="NAME,...",
                   help="reference models, e.g. preset:deit_tiny,timm:resnet50")
    p.add_argument("--no-count-references", action="store_true",
                   help="do not count reference models' FLOPs (only stored or cached costs are shown)")
    return p


def run(args: argparse.Namespace) -> int:
    import sys

    from nas.commands.front import resolve_study
    from nas.dashboard.report import build_report

    name, url, _ = resolve_study(args.study, args.storage)
    refs = [r.strip() for r in args.references.split(",") if r.strip()] if args.references else None
    info = build_report(url, name, args.out, x=args.x, y=args.y, references=refs,
                        count_references=not args.no_count_references)
    print(f"wrote {info['path']}: {info['trials']} trials, {info['front']} on the front, "
          f"{info['figures']} figures, {info['bytes'] / 1e6:.1f} MB", file=sys.stderr)
    return 0
