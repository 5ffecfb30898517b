"""``nas front STUDY``: the Pareto front of a study, with its hypervolume.

STUDY is a study name (its store defaults to ``studies/<name>.db`` under the current
directory) or a study file (``studies/x.toml``: its name and storage are read from it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("front", help="print a study's Pareto front and hypervolume",
                              description="Print the Pareto front (trial, objectives, FLOPs, params, latency, "
                                          "genome) of a study and its hypervolume.")
    p.add_argument("study", metavar="STUDY", help="study name, or a study file (studies/x.toml)")
    p.add_argument("--storage", help="database URL (default: the study file's, else sqlite:///studies/STUDY.db)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the front as a JSON list")
    fmt.add_argument("--csv", action="store_true", help="print the front as CSV")
    p.add_argument("--reference", metavar="NAME=V,...",
                   help="hypervolume reference point, e.g. accuracy=0,flops=8M (default: the study's)")
    p.add_argument("--with-presets", action="store_true",
                   help="evaluate the study's presets with its recipe (once; stored) and show them beside the front")
    p.add_argument("--html", metavar="PATH", help="also write the front as a self-contained HTML plot")
    return p


def resolve_study(study: str, storage: str | None) -> tuple[str, str, Any]:
    """(study name, storage URL, StudySpec or None) from a name or a study file path."""
    from nas.study import default_storage_for, load_study, resolve_storage_url

    spec = None
    if study.endswith(".toml") or Path(study).is_file():
        spec = load_study(study)
        name, url = spec.name, spec.storage
    else:
        name = study
        url = default_storage_for(name)
        candidate = Path("studies") / f"{name}.toml"
        if storage is None and candidate.is_file():
            try:
                spec = load_study(candidate)
                if spec.name == name:
                    url = spec.storage
                else:
                    spec = None
            except ValueError:
                spec = None
    if storage:
        url = resolve_storage_url(storage, Path.cwd())
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        db = Path(url[len("sqlite:///"):])
        if not db.exists():
            from nas.errors import NasError

            raise NasError(f"no study store at {db} (run `nas search studies/{name}.toml` first, or pass --storage)")
    return name, url, spec


def parse_reference(text: str, objectives: list[tuple[str, str]]) -> list[float]:
    from nas.errors import NasError
    from nas.study import parse_count

    vals: dict[str, float] = {}
    for part in text.split(","):
        if "=" not in part:
            raise NasError(f"--reference wants NAME=VALUE pairs like accuracy=0,flops=8M; got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        vals[k] = float(parse_count(v, k)) if k in ("flops", "params") else float(v)
    names = [n for n, _ in objectives]
    missing = [n for n in names if n not in vals]
    if missing:
        raise NasError(f"--reference needs a value for every objective ({', '.join(names)}); missing {', '.join(missing)}")
    return [vals[n] for n in names]


def front_report(name: str, url: str, reference: str | None = None) -> dict[str, Any]:
    """Everything ``nas front`` prints: records, objectives, front, reference point, hypervolume,
    and ``fidelity`` (``nas.front.Fidelity`` of an MO-ASHA study, else None)."""
    from nas import attrs
    from nas.front import (
        fidelity_summary,
        hypervolume,
        load_study_attrs,
        load_trials,
        pareto_front,
        record_from_trial,  # noqa: F401  (re-exported for callers)
        reference_point_for,
        study_objectives,  # noqa: F401
    )

    records = load_trials(url, name)
    sattrs = load_study_attrs(url, name)
    stored = sattrs.get(attrs.STUDY_OBJECTIVES)
    objectives = [(o["name"], o["direction"]) for o in stored] if stored else [("accuracy", "maximize")]
    ref = parse_reference(reference, objectives) if reference else reference_point_for(sattrs, records, objectives)
    front = pareto_front(records, objectives)
    return {
        "records": records, "objectives": objectives, "front": front, "reference_point": ref,
        "confirmed_front": pareto_front(records, objectives, stage="confirmed"),
        "supernet": sattrs.get(attrs.STUDY_SUPERNET),
        "hypervolume": hypervolume(records, objectives, ref),
        "hypervolume_normalized": hypervolume(records, objectives, ref, normalize=True),
        "presets": sattrs.get(attrs.STUDY_PRESETS) or {},
        "fidelity": fidelity_summary(records),
    }


def _fmt_value(name: str, v: float | None) -> str:
    from nas.study import format_count

    if v is None:
        return "-"
    if name == "accuracy":
        return f"{v:.4f}"
    if name in ("flops", "params"):
        return format_count(v)
    return f"{v:.3g}"


def print_front(rep: dict[str, Any], name: str, out: Any = None) -> None:
    """The human-readable table."""
    from nas.study import format_count

    out = out or sys.stdout
    objs = rep["objectives"]
    recs = rep["records"]
    states: dict[str, int] = {}
    for r in recs:
        states[r.state] = states.get(r.state, 0) + 1
    feasible = sum(1 for r in recs if r.complete and r.feasible is not False)
    print(f"study {name}: {len(recs)} trials ({', '.join(f'{k.lower()} {v}' for k, v in sorted(states.items()))}; "
          f"feasible {feasible})", file=out)
    front = rep["front"]
    confirmed = rep.get("confirmed_front") or []
    supernet = rep.get("supernet")
    fid = rep.get("fidelity")
    if not front:
        print("Pareto front: empty (no complete, feasible, full-budget trial yet)", file=out)
    else:
        what = " scored by the supernet (inherited weights)" if supernet or confirmed else ""
        if fid is not None and fid.budget:
            what += f", every member trained the full budget of {_epochs(fid.budget)}"
        _print_members(front, objs, f"Pareto front{what}", out)
    if confirmed:
        _print_members(confirmed, objs, "Confirmed front (the supernet front's top members trained stand-alone "
                                        "with the proxy recipe)", out, confirmed=True)
    if supernet:
        print(f"supernet: trained once in {supernet.get('train_time_s', 0):.0f} s ({supernet.get('steps')} steps, "
              f"{supernet.get('paths')} paths, {supernet.get('strategy')})", file=out)
    ref = ", ".join(f"{n} {_fmt_value(n, v)}" for (n, _), v in zip(objs, rep["reference_point"], strict=False))
    print(f"hypervolume: {rep['hypervolume']:.6g} (normalized {rep['hypervolume_normalized']:.4f}) "
          f"for reference point ({ref})", file=out)
    if fid is not None:
        print_fidelity(fid, out)
    presets = rep.get("presets") or {}
    if presets:
        parts = []
        for pname, p in presets.items():
            if "error" in p:
                continue
            acc = f", accuracy {p['accuracy']:.4f}" if p.get("accuracy") is not None else ""
            parts.append(f"{pname} {format_count(p.get('flops'))} FLOPs, {format_count(p.get('params'))} params{acc}")
        if parts:
            print("presets at this resolution (references): " + "; ".join(parts), file=out)


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def print_fidelity(fid: Any, out: Any) -> None:
    """Two lines for an MO-ASHA study (``nas.front.Fidelity``): who waits at which rung, and
    the epochs trained against the full budget for every candidate."""
    waits = ", ".join(f"{n} at {_epochs(rung)}" for rung, n in fid.waiting.items()) or "none"
    print(f"waiting at rungs: {waits} (MO-ASHA; continued when promoted)", file=out)
    full = (f" (full budget for all {fid.candidates} candidates would be {fid.full_budget_epochs})"
            if fid.budget else "")
    print(f"training compute: {fid.epochs_trained} epochs over {fid.trials} trials{full}", file=out)


def _print_members(members: list[Any], objs: list[tuple[str, str]], title: str, out: Any,
                   confirmed: bool = False) -> None:
    from nas import attrs
    from nas.study import format_count

    head = ["trial"] + [n for n, _ in objs] + (["supernet acc", "confirms"] if confirmed else []) + \
        ["flops", "params", "latency_ms", "summary"]
    head = list(dict.fromkeys(head))
    rows = []
    for r in members:
        row = {"trial": str(r.number)}
        for n, _ in objs:
            row[n] = _fmt_value(n, r.metric(n))
        if confirmed:
            row["supernet acc"] = _fmt_value("accuracy", r.user_attrs.get(attrs.SUPERNET_ACCURACY))
            row["confirms"] = str(r.user_attrs.get(attrs.CONFIRMS, "-"))
        row.setdefault("flops", format_count(r.flops))
        row.setdefault("params", format_count(r.params))
        row.setdefault("latency_ms", f"{r.latency_ms:.3g}" if r.latency_ms is not None else "-")
        row["summary"] = r.summary or "-"
        rows.append(row)
    widths = {h: max(len(h), *(len(row[h]) for row in rows)) for h in head}
    print(f"{title} ({len(members)} members; " + ", ".join(f"{d[:3]} {n}" for n, d in objs) + "):", file=out)
    print("  " + "  ".join(h.ljust(widths[h]) if h == "summary" else h.rjust(widths[h]) for h in head), file=out)
    for row in rows:
        print("  " + "  ".join(row[h].ljust(widths[h]) if h == "summary" else row[h].rjust(widths[h])
                               for h in head), file=out)


def run(args: argparse.Namespace) -> int:
    from nas.front import member_json

    name, url, spec = resolve_study(args.study, args.storage)
    if args.with_presets:
        _evaluate_presets(name, url, spec)
    rep = front_report(name, url, args.reference)
    if args.json:
        members = [member_json(r) for r in rep["front"] + rep["confirmed_front"]]
        if rep["fidelity"] is not None:  # the output stays a list of members: each carries the study's summary
            for m in members:
                m["fidelity"] = rep["fidelity"].to_json()
        print(json.dumps(members, indent=1))
    elif args.csv:
        buf = io.StringIO()
        objs = [n for n, _ in rep["objectives"]]
        w = csv.writer(buf)
        w.writerow(["trial", *objs, "flops", "params", "latency_ms", "arch_id", "summary", "stage"])
        for r in rep["front"] + rep["confirmed_front"]:
            w.writerow([r.number, *[r.metric(n) for n in objs], r.flops, r.params, r.latency_ms, r.arch_id, r.summary,
                        r.stage])
        sys.stdout.write(buf.getvalue())
    else:
        print_front(rep, name)
    if args.html:
        from nas.quickstart_html import write_front_html

        path = write_front_html(rep, name, args.html)
        print(f"wrote {path}", file=sys.stderr if (args.json or args.csv) else sys.stdout)
    return 0


def _evaluate_presets(name: str, url: str, spec: Any) -> None:
    import optuna

    from nas import attrs
    from nas.backends.common import evaluate_presets
    from nas.errors import NasError
    from nas.objective import TrialEvaluator
    from nas.store import open_storage
    from nas.study import StudySpec, parse_study  # noqa: F401

    storage = open_storage(url, heartbeat_s=None)
    study = optuna.load_study(study_name=name, storage=storage)
    if spec is None:
        raw = study.user_attrs.get(attrs.STUDY_SPEC)
        if not raw:
            raise NasError(f"study {name!r} has no stored study spec; pass the study file instead of its name")
        spec = spec_from_json(raw)
    if not spec.presets.names:
        raise NasError(f"study {name!r} names no presets ([presets] names = [...] in its study file)")
    evaluate_presets(study, spec, TrialEvaluator(spec))


def spec_from_json(raw: str) -> Any:
    """Rebuild a ``StudySpec`` from the JSON stored on a study."""
    from nas.study import spec_from_dict

    return spec_from_dict(json.loads(raw))
