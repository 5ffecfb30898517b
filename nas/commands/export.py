"""``nas export``: write a trial (or a genome) as a timm model folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a trial as a timm model folder (config.json, weights, model card, standalone .py)",
        description=(
            "Export an architecture as a timm / Hugging Face hub style folder. SOURCE is a study name "
            "(with --trial N or --trial best), a genome JSON file, or preset:NAME. Without a rule, "
            "--trial best on a multi-objective study lists the front and asks for --trial N."
        ),
    )
    p.add_argument("source", metavar="STUDY", help="study name, path/to/genome.json, or preset:NAME")
    p.add_argument("--trial", default=None,
                   help="trial number, or 'best' (needs --best-by for several objectives); "
                        "left out, the front is listed to pick from")
    p.add_argument("--out", type=Path, default=None, help="folder to write (refused if it exists, unless --force)")
    p.add_argument("--storage", default=None, help="study store URL (default sqlite:///studies/STUDY.db)")
    p.add_argument("--best-by", "--objective", dest="best_by", default=None, metavar="METRIC",
                   help="what --trial best optimises: an objective or accuracy/flops/params/latency_ms; "
                        "append :max or :min to set the direction (default: the study's, accuracy max, else min)")
    p.add_argument("--max-flops", default=None, help="cap for --trial best, e.g. 50M (multiply-accumulates)")
    p.add_argument("--max-params", default=None, help="cap for --trial best, e.g. 5M")
    p.add_argument("--max-latency-ms", type=float, default=None, help="cap for --trial best, in ms")
    p.add_argument("--min-accuracy", type=float, default=None, help="floor for --trial best, in [0, 1]")
    p.add_argument("--weights", nargs="?", const=True, default=False, metavar="FILE",
                   help="include weights: alone, the trial's stored proxy-trained weights; with FILE, that "
                        "state dict (safetensors or torch); it must fit the genome")
    p.add_argument("--name", default=None, help="the timm model name (default attnnas_<study>_t<trial>)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder / take over --name")
    p.add_argument("--no-register", action="store_true",
                   help="do not record the name for `nas.export.register_exports()` (the folder still loads via "
                        "local-dir:)")
    return p


def _caps(args: argparse.Namespace) -> dict[str, float | None] | None:
    """The caps of --trial best; None when no --best-by was given."""
    from nas.errors import NasError
    from nas.study import parse_count

    caps = dict(max_flops=parse_count(args.max_flops, "--max-flops") if args.max_flops else None,
                max_params=parse_count(args.max_params, "--max-params") if args.max_params else None,
                max_latency_ms=args.max_latency_ms, min_accuracy=args.min_accuracy)
    if not args.best_by:
        if any(v is not None for v in caps.values()):
            raise NasError("caps (--max-flops, ...) need --best-by METRIC to say what to optimise under them")
        return None
    return caps


def run(args: argparse.Namespace) -> int:
    from nas.errors import NasError

    if args.out is None:
        raise NasError("--out DIR is required: the folder to write the export to")
    if args.source.startswith("preset:") or args.source.endswith(".json"):
        return _export_genome(args)
    from nas import export as ex
    from nas.front import study_objectives

    trial: int | str = args.trial or "best"  # no --trial: list the front unless a rule picks
    if trial != "best":
        try:
            trial = int(trial)
        except ValueError:
            raise NasError(f"--trial must be a number or 'best', got {args.trial!r}") from None
    caps = _caps(args)
    rule = None
    if trial == "best":
        study, _ = ex.open_study(args.source, args.storage)
        objectives = study_objectives(study)
        if caps is None and len(objectives) != 1:
            print(f"The front of {args.source!r} ({len(objectives)} objectives). Pick a member with --trial N, "
                  "or give a rule, e.g. --trial best --best-by accuracy --max-flops 50M:\n")
            print(ex.format_front(study))
            print(f"\nerror: --trial best needs --best-by for a {len(objectives)}-objective study", file=sys.stderr)
            return 2
        if caps is not None:
            rule = ex.Rule.parse(args.best_by, objectives, **caps)
    elif caps is not None:
        raise NasError("--best-by and the caps apply only to --trial best")
    path, number = ex.export_trial(args.source, args.out, trial=trial, storage=args.storage, rule=rule,
                                   weights=args.weights, name=args.name, force=args.force,
                                   register=not args.no_register)
    _report(path, number, rule)
    return 0


def _export_genome(args: argparse.Namespace) -> int:
    from nas import export as ex
    from nas.errors import NasError
    from search_space import ArchSpec, get_preset

    if args.trial is not None or args.best_by:
        raise NasError("--trial/--best-by apply to a study, not to a genome file or preset")
    if args.weights is True:
        raise NasError("a genome has no stored weights: pass --weights FILE, or leave --weights out")
    if args.source.startswith("preset:"):
        spec = get_preset(args.source[len("preset:"):])
        default = f"attnnas_{args.source[len('preset:'):]}_export"
    else:
        path = Path(args.source)
        if not path.is_file():
            raise NasError(f"no genome file {path}")
        spec = ArchSpec.from_json(path.read_text())
        default = None
    out = ex.export_genome(spec, args.out, name=args.name or default, weights=args.weights or None,
                           force=args.force, register=not args.no_register)
    _report(out, None, None)
    return 0


def _report(path: Path, trial: int | None, rule) -> None:
    import json

    cfg = json.loads((path / "config.json").read_text())
    meta = cfg["attnnas"]
    picked = f"trial {trial}" + (f" ({rule.describe()} on the front)" if rule is not None else "") if trial is not None else "genome"
    print(f"exported {picked} as {meta['name']} -> {path}", file=sys.stdout)
    print(f"  {meta['summary']}")
    print(f"  files: {', '.join(sorted(p.name for p in path.iterdir()))}")
    print(f"  load:  timm.create_model('local-dir:{path}'{', pretrained=True' if meta['weights'] else ''})"
          f"  |  import nas.export; nas.export.register_exports(); timm.create_model('{meta['name']}')")
