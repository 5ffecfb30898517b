"""``nas dashboard``: serve the live Pareto dashboard over a study store (read-only)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dashboard", help="serve the live Pareto dashboard over a study store",
        description="Serve an interactive page over the study store: the Pareto front for any pair of "
                    "objectives and costs with presets and timm models on the same axes, the 3D front, "
                    "hypervolume over trials and wall time, the front's composition, parameter importance "
                    "and a trial table; click a point or a row to see its architecture. New trials appear "
                    "within seconds while a search runs. The store is only read.")
    p.add_argument("--storage", default=None,
                   help="database URL (default: sqlite:///studies/STUDY.db with --study, else the only "
                        "studies/*.db in the current directory)")
    p.add_argument("--study", default=None, help="study shown first (default: the first in the store)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    p.add_argument("--references", default=None, metavar="NAME,...",
                   help="reference models, e.g. preset:deit_tiny,timm:resnet50 (default: the study's presets "
                        "and a few timm models)")
    p.add_argument("--no-count-references", action="store_true",
                   help="do not count reference models' FLOPs (only costs already cached or stored are shown)")
    return p


def default_storage(study: str | None) -> str:
    from pathlib import Path

    from nas.errors import NasError

    if study:
        return "sqlite:///" + str((Path.cwd() / "studies" / f"{study}.db").resolve())
    dbs = sorted(Path("studies").glob("*.db"))
    if len(dbs) == 1:
        return "sqlite:///" + str(dbs[0].resolve())
    raise NasError("pass --storage URL (or --study NAME for studies/NAME.db); "
                   f"found {len(dbs)} stores under studies/")


def run(args: argparse.Namespace) -> int:
    from nas.dashboard.app import serve

    url = args.storage or default_storage(args.study)
    refs = [r.strip() for r in args.references.split(",") if r.strip()] if args.references else None
    serve(url, host=args.host, port=args.port, study=args.study, references=refs,
          count_references=not args.no_count_references)
    return 0
