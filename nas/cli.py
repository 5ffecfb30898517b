"""The ``nas`` command line: one module per subcommand under ``nas.commands``.

Each ``nas.commands.<name>`` module defines ``add_parser(subparsers)`` and ``run(args) -> int``
and keeps heavy imports (torch, ray, plotly) inside ``run`` so ``nas --help`` stays fast.
User errors (``NasError``/``ValueError``) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from nas.errors import NasError

COMMANDS = ("search", "front", "profile", "latency", "export", "dashboard", "report", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Attention NAS: search vision backbones under budgets.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nas.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"nas.commands.{name}":
                continue
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (NasError, ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (silence the interpreter's flush at exit)
        return 0


if __name__ == "__main__":
    sys.exit(main())
