"""Export an architecture as a timm model folder (the layout of a Hugging Face hub timm repo).

``export_genome(spec, out)`` writes, atomically (a temp folder next to ``out``, then a rename)::

    out/config.json          architecture "attnnas", model_args {"genome": ...}, num_classes,
                             pretrained_cfg (input_size, mean, std, classifier, first_conv, ...)
    out/model.safetensors    the weights, when given (proxy-trained weights or any fitting state dict)
    out/README.md            the model card: genome, per-stage table, FLOPs, params, latency, accuracy
    out/<name>_model.py      one self-contained file (torch + timm only) registering ``<name>``

How an exported model loads in a new process:

- ``timm.create_model("local-dir:out", pretrained=True)`` after ``import search_space.builder``
  (or ``import nas.export``): config.json names the generic ``attnnas`` entry point and carries the
  genome, so a copied folder loads anywhere this package is installed; no global state needed.
- ``timm.create_model("<name>", num_classes=...)`` after ``import nas.export``: every export is
  recorded in a small registry file (``$ATTNNAS_EXPORTS``, default
  ``~/.config/attnnas/exports.json``) holding the name, the genome and the folder; importing this
  module registers each recorded name with timm (``pretrained=True`` loads the folder's weights).
- Without this package: ``import <name>_model`` from the folder registers ``<name>`` too.

``export_trial(...)`` does the same for a trial of a study store (Optuna RDB storage), taking
the genome, costs and metrics from the trial's attributes (``nas.attrs``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.models import register_model

import search_space.builder as _builder  # registers attnnas / attnnas_<preset> with timm
from nas import attrs
from nas._standalone import BundleError, load_body, standalone_source
from nas.errors import NasError
from search_space.genome import ArchSpec

__all__ = [
    "ExportInfo", "export_genome", "export_trial", "select_trial", "load_state_dict_for", "registry_path",
    "register_exports", "exported_names", "default_name", "NasError",
]

REGISTRY_ENV = "ATTNNAS_EXPORTS"
WEIGHTS_FILE = "model.safetensors"
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


# --- what the card says ------------------------------------------------------------------
@dataclass
class ExportInfo:
    """Where an export came from and what it costs; every field optional (a bare genome has none)."""

    study: str | None = None
    trial: int | None = None
    storage: str | None = None
    values: dict[str, float] = field(default_factory=dict)  # objective name -> value
    flops: int | None = None
    params: int | None = None
    flops_per_stage: list[int] | None = None
    params_per_stage: list[int] | None = None
    latency_ms: float | None = None
    latency_spread_ms: float | None = None
    latency_device: str | None = None
    latency_setting: dict[str, Any] | None = None
    accuracy: float | None = None
    epochs: int | None = None
    epoch_budget: int | None = None
    code_version: str | None = None
    weights_source: str | None = None

    @classmethod
    def from_trial(cls, study: str, storage: str, trial: Any, objective_names: list[str]) -> ExportInfo:
        ua = trial.user_attrs
        values = dict(zip(objective_names, trial.values or [], strict=False))
        return cls(
            study=study, trial=trial.number, storage=_redact(storage), values=values,
            flops=ua.get(attrs.FLOPS), params=ua.get(attrs.PARAMS), flops_per_stage=ua.get(attrs.FLOPS_PER_STAGE),
            params_per_stage=ua.get(attrs.PARAMS_PER_STAGE), latency_ms=ua.get(attrs.LATENCY_MS),
            latency_spread_ms=ua.get(attrs.LATENCY_SPREAD_MS), latency_device=ua.get(attrs.LATENCY_DEVICE),
            latency_setting=ua.get(attrs.LATENCY_SETTING), accuracy=ua.get(attrs.ACCURACY),
            epochs=ua.get(attrs.EPOCHS), epoch_budget=ua.get(attrs.EPOCH_BUDGET),
            code_version=ua.get(attrs.CODE_VERSION),
        )


def _redact(url: str | None) -> str | None:
    from nas.store import redact

    return redact(url) if url else url


# --- names and the registry of exported names --------------------------------------------
def default_name(study: str | None, trial: int | None, spec: ArchSpec) -> str:
    """``attnnas_<study>_t<trial>``, or ``attnnas_<arch_id[:8]>`` for a bare genome."""
    if study is None:
        return f"attnnas_{spec.arch_id[:8]}"
    slug = re.sub(r"[^a-z0-9]+", "_", study.lower()).strip("_") or "study"
    return f"attnnas_{slug}_t{trial}"


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise NasError(f"--name {name!r}: an exported name must be lower-case letters, digits and '_' and not "
                       "start with a digit (it becomes a timm model name and a Python identifier)")


def registry_path() -> Path:
    """The file recording exported names: ``$ATTNNAS_EXPORTS`` or ``~/.config/attnnas/exports.json``."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "attnnas" / "exports.json"


def _read_registry() -> dict[str, dict[str, Any]]:
    path = registry_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return data.get("exports", {}) if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError) as e:
        warnings.warn(f"ignoring the unreadable export registry {path}: {e}", stacklevel=2)
        return {}


def _write_registry(entries: dict[str, dict[str, Any]]) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".exports-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump({"version": 1, "exports": entries}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def exported_names() -> dict[str, str]:
    """Recorded exported names -> their folders."""
    return {name: e.get("dir", "") for name, e in sorted(_read_registry().items())}


_registered: dict[str, str] = {}  # name -> arch_id registered in this process


def _entry_point(name: str, entry: dict[str, Any]):
    spec = ArchSpec.from_dict(entry["genome"])
    folder = Path(entry.get("dir", ""))
    weights = folder / WEIGHTS_FILE if entry.get("weights") else None
    cfg = _builder._default_cfg(**_builder.pretrained_cfg_for(spec), file=str(weights) if weights else None)

    def make(pretrained: bool = False, **kwargs: Any) -> _builder.NasNet:
        if pretrained and (weights is None or not weights.is_file()):
            where = f"{weights} is missing" if weights else "it was exported without weights"
            raise NasError(f"{name} has no weights ({where}); use pretrained=False, or export again with --weights")
        if kwargs.get("pretrained_cfg") is None:  # describes the checkpoint: timm adapts a new classifier to it
            kwargs["pretrained_cfg"] = dict(cfg)
        return _builder.create_nasnet(name, spec, pretrained=pretrained, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__module__ = __name__
    make.__doc__ = f"Exported architecture {spec.summary()} (folder: {folder})."
    return make


def _register(name: str, entry: dict[str, Any]) -> None:
    """Register ``name`` with timm in this process (quietly replacing an earlier export of it)."""
    arch_id = ArchSpec.from_dict(entry["genome"]).arch_id + str(entry.get("dir")) + str(entry.get("weights"))
    if _registered.get(name) == arch_id:
        return
    fn = _entry_point(name, entry)
    globals()[name] = fn  # timm lists it in this module's __all__
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overwriting")
        register_model(fn)
    _registered[name] = arch_id


def register_exports() -> list[str]:
    """Register every recorded export with timm; returns the names. Runs when this module is imported."""
    names = []
    for name, entry in _read_registry().items():
        try:
            _register(name, entry)
            names.append(name)
        except (ValueError, KeyError, TypeError) as e:  # a stale entry must not break the import
            warnings.warn(f"skipping exported model {name!r} from {registry_path()}: {e}", stacklevel=2)
    return names


def _check_free(name: str, folder: Path, force: bool) -> None:
    """Refuse a name timm already has, or one recorded for another folder (unless ``force``)."""
    import timm

    old = _read_registry().get(name)
    if old is None and name not in _registered and timm.is_model(name):
        raise NasError(f"the name {name!r} is already a timm model; choose another with --name")
    if old is not None and Path(old.get("dir", "")) != folder and Path(old.get("dir", "")).exists() and not force:
        raise NasError(f"the name {name!r} is already exported to {old['dir']}; choose another with --name, "
                       "or pass --force to move it")


def _record(name: str, spec: ArchSpec, folder: Path, weights: bool) -> None:
    """Add ``name`` to the registry file and register it with timm in this process."""
    entries = _read_registry()
    entries[name] = {"dir": str(folder), "genome": spec.to_dict(), "weights": weights}
    _write_registry(entries)
    _register(name, entries[name])


# --- weights -----------------------------------------------------------------------------
def load_state_dict_for(model: torch.nn.Module, source: str | Path | dict[str, torch.Tensor],
                        what: str = "the weights") -> None:
    """Load ``source`` (a safetensors/torch file or a state dict) into ``model`` strictly; a
    ``NasError`` in one line names what does not fit."""
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise NasError(f"{what}: no such file {path}")
        from timm.models import load_state_dict

        try:
            source = load_state_dict(str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise NasError(f"{what} at {path} could not be read: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in source]
    unexpected = [k for k in source if k not in own]
    shapes = [f"{k} {tuple(source[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in source and tuple(source[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]} (checkpoint vs genome)")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise NasError(f"{what} do not fit the genome: {'; '.join(parts)}")
    model.load_state_dict(source, strict=True)


# --- the export itself -------------------------------------------------------------------
def export_genome(
    spec: ArchSpec | dict | str,
    out: str | Path,
    *,
    name: str | None = None,
    weights: str | Path | dict[str, torch.Tensor] | None = None,
    info: ExportInfo | None = None,
    force: bool = False,
    register: bool = True,
    self_check: bool = True,
) -> Path:
    """Write the export folder ``out`` for ``spec`` (see the module docstring); returns its path.

    ``weights``: a state dict or a file (safetensors or torch) that must fit the genome exactly.
    ``force`` replaces an existing ``out``. ``register`` records ``name`` so ``import nas.export``
    registers it with timm in later processes. ``self_check`` builds the standalone file's model
    and checks it gives the package model's outputs.
    """
    spec = _builder._as_spec(spec).validate()
    info = info or ExportInfo()
    name = name or default_name(info.study, info.trial, spec)
    _check_name(name)
    out = Path(out).expanduser().absolute()
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise NasError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise NasError(f"{out} exists and is not a folder")
    if register:
        _check_free(name, out, force)

    model = _builder.build_model(spec).eval()
    if weights is not None:
        what = "the weights" if isinstance(weights, dict) else f"the weights {weights}"
        load_state_dict_for(model, weights, what)
        info.weights_source = info.weights_source or ("a state dict" if isinstance(weights, dict) else str(weights))
    if info.params is None:
        info.params = sum(p.numel() for p in model.parameters())
    if info.flops is None:
        info.flops = _count_flops(model, spec)

    try:
        src = standalone_source(spec, name, origin=_origin(info), module=f"{name}_model", model=model)
    except BundleError as e:
        raise NasError(f"could not write the standalone file: {e}") from None
    if self_check:
        _self_check(src, spec, model)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        if weights is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE),
                      metadata={"format": "pt", "genome": spec.to_json(), "name": name})
        (tmp / "config.json").write_text(json.dumps(_config(spec, model, name, info, weights is not None), indent=2))
        (tmp / f"{name}_model.py").write_text(src.text)
        (tmp / "README.md").write_text(model_card(spec, model, name, info, weights is not None, out))
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if register:
        _record(name, spec, out, weights is not None)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _count_flops(model: torch.nn.Module, spec: ArchSpec) -> int | None:
    try:
        from evaluators import count_flops

        return int(count_flops(model, input_size=(spec.in_chans, *spec.img_hw)))
    except Exception:  # noqa: BLE001 - the card says "not recorded" rather than failing the export
        return None


def _self_check(src, spec: ArchSpec, model: torch.nn.Module) -> None:
    """Build the standalone file's model, load the package model's weights, compare outputs."""
    try:
        mod = load_body(src)
        other = mod.NasNet(spec.to_dict()).eval()
        other.load_state_dict(model.state_dict(), strict=True)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, spec.in_chans, *spec.img_hw, generator=g)
        with torch.no_grad():
            diff = (model(x) - other(x)).abs().max().item()
    except Exception as e:  # noqa: BLE001
        raise NasError(f"the generated standalone file failed its self-check: {type(e).__name__}: {e}") from None
    if not diff <= 1e-6:
        raise NasError(f"the generated standalone file's model differs from the package's (max |diff| {diff:.3g})")


def _origin(info: ExportInfo) -> str:
    if info.study is None:
        return "Exported from a genome."
    return f"Exported from study {info.study!r}, trial {info.trial}."


def _config(spec: ArchSpec, model: torch.nn.Module, name: str, info: ExportInfo, has_weights: bool) -> dict[str, Any]:
    cfg = _builder._default_cfg(**_builder.pretrained_cfg_for(spec))
    cfg.pop("url", None)
    cfg["fixed_input_size"] = False
    return {
        "architecture": "attnnas",
        "num_classes": spec.num_classes,
        "num_features": model.num_features,
        "model_args": {"genome": spec.to_dict()},
        "pretrained_cfg": cfg,
        "attnnas": {  # not read by timm: provenance for people and tools
            "name": name, "arch_id": spec.arch_id, "summary": spec.summary(), "weights": has_weights,
            "study": info.study, "trial": info.trial, "flops": info.flops, "params": info.params,
            "latency_ms": info.latency_ms, "latency_device": info.latency_device, "accuracy": info.accuracy,
            "standalone": f"{name}_model.py",
        },
    }


# --- the model card ----------------------------------------------------------------------
def _fmt_count(n: float | None) -> str:
    if n is None:
        return "not recorded"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:g}"


def model_card(spec: ArchSpec, model: torch.nn.Module, name: str, info: ExportInfo, has_weights: bool,
               folder: Path | None = None) -> str:
    """The README.md of an export: genome, per-stage table, costs, metrics, provenance, loading."""
    grids = spec.stage_grids()
    stage_params = info.params_per_stage or [sum(p.numel() for p in st.parameters()) for st in model.stages]
    rows = []
    for i, (s, grid) in enumerate(zip(spec.stages, grids, strict=False)):
        knobs = ", ".join(f"{k}={v}" for k, v in s.mixer_knobs) or "-"
        flops = _fmt_count(info.flops_per_stage[i]) if info.flops_per_stage and i < len(info.flops_per_stage) else "-"
        extras = [f"ls={s.layer_scale:g}" if s.layer_scale else "", s.channel_attn if s.channel_attn != "none" else ""]
        rows.append(f"| {i} | {s.downsample} | {grid[0]}x{grid[1]} | {s.depth} | {s.dim} | {s.mixer} | {knobs} | "
                    f"{s.pos} | {s.mlp} x{s.mlp_ratio:g} | {' '.join(e for e in extras if e) or '-'} | "
                    f"{_fmt_count(stage_params[i]) if i < len(stage_params) else '-'} | {flops} |")
    stem_knobs = ", ".join(f"{k}={v}" for k, v in spec.stem.knobs)
    head = spec.head.pool + (f" + MLP head x{spec.head.mlp_ratio:g}" if spec.head.mlp_ratio else "")
    if info.latency_ms is not None:
        setting = info.latency_setting or {}
        spread = f" (IQR {info.latency_spread_ms:.3g} ms)" if info.latency_spread_ms is not None else ""
        latency = (f"{info.latency_ms:.3g} ms{spread} on {info.latency_device or 'an unrecorded device'}, "
                   f"batch {setting.get('batch', '?')}, {setting.get('dtype', '?')}, {setting.get('img_size', '?')} px")
    else:
        latency = "not measured"
    if info.accuracy is not None:
        ep = f" after {info.epochs} of {info.epoch_budget} epochs" if info.epochs is not None else ""
        accuracy = f"{100 * info.accuracy:.2f}% top-1 (proxy training{ep}; not a full-training result)"
    else:
        accuracy = "not recorded"
    objectives = ", ".join(f"{k} = {v:.6g}" for k, v in info.values.items()) or "-"
    origin = (f"study `{info.study}`, trial {info.trial}" + (f" (store `{info.storage}`)" if info.storage else "")
              if info.study is not None else "a genome (no study)")
    weights = (f"`model.safetensors`: {info.weights_source or 'given at export'}" if has_weights else
               "none: this export is the architecture only (train it, or export again with `--weights`)")
    load_pre = "pretrained=True" if has_weights else "pretrained=False"
    return f"""---
library_name: timm
tags:
- image-classification
- timm
- attention-nas
license: apache-2.0
---
# {name}

An architecture found by attention NAS: `{spec.summary()}`.

| | |
|---|---|
| Source | {origin} |
| Input | {spec.in_chans} x {spec.img_hw[0]} x {spec.img_hw[1]}, {spec.num_classes} classes |
| FLOPs (MACs) | {_fmt_count(info.flops)} at {spec.img_hw[0]}x{spec.img_hw[1]} px |
| Parameters | {_fmt_count(info.params)} ({info.params if info.params is not None else '?'}) |
| Latency | {latency} |
| Proxy accuracy | {accuracy} |
| Objectives | {objectives} |
| Weights | {weights} |
| arch_id | `{spec.arch_id}` |
| Code version | {info.code_version or 'not recorded'} |

## Genome

Stem: `{spec.stem.kind}` patch {spec.stem.patch_size}{f' ({stem_knobs})' if stem_knobs else ''}. Head: {head}.

| stage | downsample | grid | depth | width | mixer | mixer knobs | pos | MLP | extras | params | FLOPs |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The full genome is `model_args.genome` in `config.json`.

## Load it

With attention-nas installed:

```python
import timm
import nas.export  # registers attnnas and every exported name with timm

model = timm.create_model("local-dir:{folder or '/path/to/this/folder'}", {load_pre})
model = timm.create_model("{name}", num_classes=10)  # by name, a fresh 10-class classifier
```

Without it, vendor `{name}_model.py` (depends only on torch and timm):

```python
import timm
import {name}_model  # registers "{name}"

model = timm.create_model("{name}", {load_pre})
```

`features_only=True`, `forward_intermediates`, `reset_classifier` and `torch.export` work as for any timm model.
"""


# --- studies -----------------------------------------------------------------------------
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
        info.weights_source = f"proxy-trained weights of trial {t.number} ({source.name})"
    elif weights:
        source = Path(weights)
    path = export_genome(spec, out, name=name or default_name(study_name, t.number, spec), weights=source,
                         info=info, force=force, register=register)
    return path, t.number


register_exports()
