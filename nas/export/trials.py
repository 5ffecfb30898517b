"""Exporting a trial of a study: open the store, pick a front member (``Rule``), export it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas import attrs
from nas.errors import NasError
from nas.export.card import ExportInfo
from nas.export.registry import default_name
from nas.export.writer import export_genome
from search_space.genome import ArchSpec


@dataclass
class Rule:
    """How ``--trial best`` picks: optimise ``metric`` among front members meeting the caps."""

    metric: str
    maximize: bool
    max_flops: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = None

    @classmethod
    def parse(cls, best_by: str, objectives: list[tuple[str, str]], **caps: float | None) -> Rule:
        """``"accuracy"`` / ``"latency_ms:min"``: the direction defaults to the study's for an
        objective, else to ``nas.front.DIRECTIONS`` (accuracy up, costs down)."""
        from nas.front import DIRECTIONS

        metric, _, direction = best_by.partition(":")
        if direction not in ("", "max", "min"):
            raise NasError(f"--best-by {best_by!r}: the direction after ':' must be max or min")
        known = dict(objectives)
        if not direction:
            direction = "max" if known.get(metric, DIRECTIONS.get(metric, "minimize")) == "maximize" else "min"
        return cls(metric, direction == "max", **caps)

    def describe(self) -> str:
        caps = [f"{k.split('_', 1)[1]} {'<=' if k.startswith('max') else '>='} {v:g}"
                for k, v in (("max_flops", self.max_flops), ("max_params", self.max_params),
                             ("max_latency_ms", self.max_latency_ms), ("min_accuracy", self.min_accuracy))
                if v is not None]
        return f"{'highest' if self.maximize else 'lowest'} {self.metric}" + (f" with {', '.join(caps)}" if caps else "")

    def admits(self, record: Any) -> bool:
        for metric, limit, upper in (("flops", self.max_flops, True), ("params", self.max_params, True),
                                     ("latency_ms", self.max_latency_ms, True), ("accuracy", self.min_accuracy, False)):
            if limit is None:
                continue
            v = record.metric(metric)
            if v is None or (v > limit if upper else v < limit):
                return False
        return record.metric(self.metric) is not None


def front_records(study: Any) -> list[Any]:
    """The study's Pareto front as ``nas.front.TrialRecord``s (``nas.front.pareto_front``)."""
    from nas.front import pareto_front, record_from_trial, study_objectives

    objectives = study_objectives(study)
    names = [n for n, _ in objectives]
    records = [record_from_trial(t, names) for t in study.get_trials(deepcopy=False)]
    return pareto_front(records, objectives)


def select_trial(study: Any, rule: Rule) -> int:
    """The number of the front member ``rule`` picks; ``NasError`` when none qualifies."""
    members = front_records(study)
    if not members:
        raise NasError(f"study {study.study_name!r} has no completed, feasible, full-budget trials to choose from")
    ok = [r for r in members if rule.admits(r)]
    if not ok:
        raise NasError(f"no member of the front of {study.study_name!r} has the {rule.describe()} "
                       f"({len(members)} members: run `nas export {study.study_name} --trial best` to list them)")
    best = (max if rule.maximize else min)(ok, key=lambda r: (r.metric(rule.metric), -r.number))
    return best.number


def format_front(study: Any) -> str:
    """A table of the front, one row per member, for the user to pick ``--trial`` from."""
    from nas.front import study_objectives
    from nas.study import format_count

    def cell(record: Any, metric: str) -> str:
        v = record.metric(metric)
        if v is None:
            return "-"
        return format_count(v) if metric in ("flops", "params") else f"{v:.4f}" if metric == "accuracy" else f"{v:.4g}"

    names = [n for n, _ in study_objectives(study)]
    columns = names + [m for m in ("accuracy", "flops", "params", "latency_ms") if m not in names]
    head = ["trial", *columns, "genome"]
    rows = [[str(r.number), *(cell(r, m) for m in columns), r.summary or _summary(r.genome)]
            for r in front_records(study)]
    if not rows:
        return "(the front is empty: no completed, feasible, full-budget trials yet)"
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows])


def _summary(genome: str | None) -> str:
    try:
        return ArchSpec.from_json(genome).summary() if genome else "-"
    except ValueError:
        return "(unreadable genome)"


def open_study(study: str, storage: str | None = None) -> tuple[Any, str]:
    """Load a study from its store (``studies/STUDY.db`` by default): ``(study, storage_url)``.
    ``NasError`` naming the studies there when it is absent; never creates a store."""
    import optuna

    from nas.store import open_storage, require_study
    from nas.study import default_storage_for

    url = storage or default_storage_for(study)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        path = Path(url[len("sqlite:///"):])
        if not path.is_file():
            hint = "" if storage else "; pass --storage URL"
            raise NasError(f"no study store at {path}{hint}")
    rdb = open_storage(url, heartbeat_s=None)
    require_study(rdb, study, url)
    return optuna.load_study(study_name=study, storage=rdb), url


def get_trial(study: Any, number: int) -> Any:
    """The completed trial ``number`` with a genome; ``NasError`` for a missing or failed one."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        span = f"trials 0..{max(t.number for t in trials)}" if trials else "no trials yet"
        raise NasError(f"study {study.study_name!r} has no trial {number} ({span})")
    t = match[0]
    if t.state != optuna.trial.TrialState.COMPLETE:
        why = t.user_attrs.get(attrs.FAILURE)
        raise NasError(f"trial {number} of {study.study_name!r} is {t.state.name.lower()}"
                       f"{': ' + why if why else ''}; export a completed trial (see `nas front {study.study_name}`)")
    if attrs.GENOME not in t.user_attrs:
        raise NasError(f"trial {number} of {study.study_name!r} has no genome attribute {attrs.GENOME!r}")
    return t


def stored_weights(trial: Any, storage: str) -> Path:
    """The proxy-trained weights a trial recorded (``attrs.WEIGHTS``); ``NasError`` if none."""
    key = getattr(attrs, "WEIGHTS", "weights_path")
    value = trial.user_attrs.get(key)
    if not value:
        raise NasError(f"trial {trial.number} has no stored weights (no {key!r} attribute: the search saves "
                       "proxy-trained weights only with `save_weights = true` in the study's [evaluator]); "
                       "export without --weights, or pass --weights FILE")
    path = Path(value).expanduser()
    if not path.is_absolute() and storage.startswith("sqlite:///"):
        beside_store = Path(storage[len("sqlite:///"):]).parent / path
        path = beside_store if beside_store.exists() else path
    if not path.is_file():
        raise NasError(f"trial {trial.number}'s stored weights {value} are missing (looked for {path})")
    return path


def export_trial(
    study_name: str,
    out: str | Path,
    *,
    trial: int | str = "best",
    storage: str | None = None,
    rule: Rule | None = None,
    weights: bool | str | Path = False,
    name: str | None = None,
    force: bool = False,
    register: bool = True,
) -> tuple[Path, int]:
    """Export a trial of a study (``trial="best"`` needs ``rule`` unless the study has one
    objective); ``weights=True`` takes the trial's stored weights, a path takes that file.
    Returns the folder and the trial number."""
    from nas.front import study_objectives

    study, url = open_study(study_name, storage)
    objectives = study_objectives(study)
    if trial == "best":
        if rule is None:
            if len(objectives) != 1:
                raise NasError(f"--trial best needs a rule for a {len(objectives)}-objective study, e.g. "
                               "--best-by accuracy --max-flops 50M; or pick one with --trial N")
            rule = Rule.parse(objectives[0][0], objectives)
        trial = select_trial(study, rule)
    t = get_trial(study, int(trial))
    spec = ArchSpec.from_json(t.user_attrs[attrs.GENOME])
    info = ExportInfo.from_trial(study_name, url, t, [n for n, _ in objectives])
    source: Path | None = None
    if weights is True:
        source = stored_weights(t, url)
        kind = "weights inherited from the study's supernet" if t.user_attrs.get(attrs.STAGE) == "search" \
            and attrs.SUPERNET_ACCURACY in t.user_attrs else "proxy-trained weights"
        info.weights_source = f"{kind} of trial {t.number} ({source.name})"
    elif weights:
        source = Path(weights)
    path = export_genome(spec, out, name=name or default_name(study_name, t.number, spec), weights=source,
                         info=info, force=force, register=register)
    return path, t.number

