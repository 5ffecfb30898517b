"""``nas search STUDY.toml``: run (or resume) a study, then print its front and write the HTML.

Running it again on the same store continues the study with the sampler the file names, until
the study holds ``trials`` trials; trials a killed worker left RUNNING are failed by heartbeat
and retried.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("search", help="run or resume a study from a study file",
                              description="Run (or resume) the search a study file describes; print the Pareto "
                                          "front and write it as HTML next to the study file.")
    p.add_argument("study", metavar="STUDY.toml", help="the study file (e.g. studies/quickstart.toml)")
    p.add_argument("--trials", type=int, help="total trials the study should hold (overrides the file)")
    p.add_argument("--timeout", type=float, metavar="S", help="time budget in seconds (overrides the file)")
    p.add_argument("--storage", help="database URL (overrides the file), e.g. postgresql://user@host/db")
    p.add_argument("--backend", choices=("optuna", "ray"), help="search backend (overrides the file)")
    from nas.samplers import SAMPLER_NAMES

    p.add_argument("--sampler", choices=SAMPLER_NAMES, help="sampler (overrides the file)")
    p.add_argument("--workers", type=int, help="worker processes on this machine (optuna backend)")
    p.add_argument("--ray-address", metavar="ADDR", help="join an existing Ray cluster (ray backend)")
    p.add_argument("--seed", type=int, help="sampler seed (overrides the file)")
    p.add_argument("--with-presets", action="store_true",
                   help="also evaluate the study's presets with the same recipe and show them beside the front")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--html", metavar="PATH", help="where to write the front plot (default: next to the study file)")
    p.add_argument("--heartbeat", type=float, metavar="S", help=argparse.SUPPRESS)
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from nas.errors import NasError
    from nas.study import resolve_storage_url

    o: dict[str, Any] = {}
    if args.trials is not None:
        if args.trials < 1:
            raise NasError(f"--trials must be at least 1, got {args.trials}")
        o["trials"] = args.trials
    if args.timeout is not None:
        if args.timeout <= 0:
            raise NasError(f"--timeout must be positive, got {args.timeout}")
        o["timeout_s"] = args.timeout
    if args.storage:
        o["storage"] = resolve_storage_url(args.storage, Path.cwd())
    if args.backend:
        o["backend"] = args.backend
    if args.sampler:
        o["sampler"] = args.sampler
    if args.workers is not None:
        if args.workers < 1:
            raise NasError(f"--workers must be at least 1, got {args.workers}")
        o["workers"] = args.workers
    if args.seed is not None:
        o["seed"] = args.seed
    return o


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from nas.study import load_study

    spec = load_study(args.study, overrides=overrides_from_args(args))
    if args.ray_address:
        spec = spec.replace(ray=dataclasses.replace(spec.ray, address=args.ray_address), backend="ray")
    html = Path(args.html) if args.html else Path(args.study).parent / f"{spec.name}_front.html"
    return search(spec, show_progress=not args.no_progress, with_presets=args.with_presets, html=html,
                  heartbeat_s=args.heartbeat)


def prepare(spec: Any, heartbeat_s: float | None = None) -> tuple[Any, Any, Any]:
    """Open the store, load the data, check the budget, create or resume the study.

    Returns ``(storage, study, evaluator)``; raises ``NasError`` (one line) on bad input.
    """
    from nas.backends.common import check_budget, create_or_load, record_presets
    from nas.evaluator import TrialEvaluator
    from nas.store import HEARTBEAT_S, open_storage, study_names

    storage = open_storage(spec.storage, heartbeat_s=heartbeat_s or HEARTBEAT_S)
    te = TrialEvaluator(spec)
    if spec.evaluator.kind in ("proxy", "zero_cost"):
        te.data()  # a missing root or a bad dataset fails here, before any trial
    resuming = spec.name in study_names(storage)
    if not resuming:
        check_budget(te, spec)
    study = create_or_load(spec, storage)
    record_presets(study, spec, te.num_classes)
    return storage, study, te


def search(spec: Any, *, show_progress: bool = True, with_presets: bool = False, html: Path | None = None,
           heartbeat_s: float | None = None, out: Any = None) -> int:
    """Run ``spec``'s study to its budget; print the front; write the HTML. Returns an exit code."""
    from nas.backends.optuna_backend import counted_trials
    from nas.commands.front import front_report, print_front
    from nas.errors import NasError
    from nas.study import format_count

    out = out or sys.stdout
    storage, study, te = prepare(spec, heartbeat_s)
    done = counted_trials(study)
    target = spec.trials
    interrupted = False
    if target is not None and done >= target:
        print(f"study {spec.name!r} already holds {done} trials (target {target}); pass --trials N (> {done}) "
              "to continue it", file=out)
    else:
        how = f"{spec.backend}/{spec.sampler}" + (f", {spec.workers} workers" if spec.workers > 1 else "")
        resumed = f", resuming at {done}" if done else ""
        budget = f"{target} trials" if target else ""
        if spec.timeout_s:
            budget += (" or " if budget else "") + f"{spec.timeout_s:g} s"
        print(f"search {spec.name!r} ({how}; {budget}{resumed}) -> {_short(spec.storage)}", file=out)
        if spec.evaluator.fidelity.pruner not in ("none", "mo_asha") and not spec.prunes:
            print(f"note: pruner {spec.evaluator.fidelity.pruner!r} ignored: Optuna prunes single-objective studies "
                  "only (use objectives = [\"accuracy\"] with caps, or the ray backend's ASHA)", file=out)
        if spec.backend == "ray":
            from nas.backends.ray_backend import run as run_ray

            result = run_ray(spec, target=target, show_progress=show_progress, heartbeat_s=heartbeat_s)
        else:
            from nas.backends.optuna_backend import run as run_optuna

            result = run_optuna(spec, target=target, show_progress=show_progress, heartbeat_s=heartbeat_s,
                                initial=done)
        interrupted = result.interrupted
    if spec.evaluator.kind == "supernet" and not interrupted:  # stage 2: the confirmed front
        from nas.supernet import confirm_front

        confirm_front(study, spec, te, out=out)
    if (with_presets or spec.presets.evaluate) and spec.presets.names and not interrupted:
        from nas.backends.common import evaluate_presets

        print(f"evaluating presets {', '.join(spec.presets.names)} with the study's recipe", file=out)
        evaluate_presets(study, spec, te)
    rep = front_report(spec.name, spec.storage)
    print_front(rep, spec.name, out=out)
    if not rep["front"] and not interrupted and rep["records"]:
        complete = [r for r in rep["records"] if r.complete]
        if complete and all(r.feasible is False for r in complete):
            seen = [r.flops for r in complete if r.flops]
            raise NasError(f"no trial met the budget ({_caps(spec)}); the smallest FLOPs seen were "
                           f"{format_count(min(seen)) if seen else '-'}: raise the limits or shrink the space")
        failed = [r.failure for r in rep["records"] if r.state == "FAIL" and r.failure]
        if failed:
            common = max(set(failed), key=failed.count)
            print(f"warning: no trial finished; {len(failed)} failed, most often with: {common}", file=sys.stderr)
    if html is not None:
        from nas.quickstart_html import write_front_html

        print(f"wrote {write_front_html(rep, spec.name, html)}", file=out)
    if interrupted:
        print(f"interrupted: the finished trials are in {_short(spec.storage)}; run the same command to continue",
              file=sys.stderr)
        return 130
    return 0


def _caps(spec: Any) -> str:
    from nas.study import format_count

    lim = spec.constraints.limits()
    return ", ".join(f"{k} {format_count(v) if k != 'max_latency_ms' else v}" for k, v in lim.items()) or "none"


def _short(url: str) -> str:
    from nas.store import redact

    if url.startswith("sqlite:///"):
        p = Path(url[len("sqlite:///"):])
        try:
            return "sqlite:///" + str(p.relative_to(Path.cwd()))
        except ValueError:
            return url
    return redact(url)
