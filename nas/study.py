"""Study files: ``studies/*.toml`` -> a typed, validated ``StudySpec``.

A study file names the search (storage, backend, sampler, budget, seed), the data, the space
(stems, mixers with knob ranges, position encodings, shapes, depth and width ranges), the
objectives, the constraints and the evaluator. ``load_study(path)`` parses and validates it:

- a TOML syntax error reports the file and line;
- an unknown key names the closest valid key (difflib) and the line where it appears;
- a wrong type or range says what is allowed.

The schema is declared once, here: each table is a dataclass below and each of its fields says
its type (the annotation), its doc and its allowed values (``metadata``); ``nas.schema`` parses
a table from those fields. Fields that are the same concept as a library setting are borrowed
from it (``evaluators.DataSpec``, ``evaluators.ProxyConfig``) with their doc and range; where a
study's default differs from the library's, ``STUDY_DEFAULTS`` says so, in one place.

Storage default: ``sqlite:///studies/<name>.db``. Relative SQLite paths written in a study
file (and the default) are resolved against the study file's directory's *parent* (the project
root for ``studies/x.toml``), so the store lands at ``studies/<name>.db`` whatever the cwd.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.config import DataSpec as LibraryData
from evaluators.config import ProxyConfig
from nas.errors import NasError, did_you_mean
from nas.schema import (
    Ctx,
    borrow,
    check_keys,
    from_plain,
    int_value,
    join,
    num_value,
    parse_fields,
    setting,
    str_list,
    table_of,
)

BACKENDS = ("optuna", "ray")
SHAPES = ("isotropic", "pyramid")
OBJECTIVES = {"accuracy": "maximize", "flops": "minimize", "params": "minimize", "latency_ms": "minimize"}
EVALUATORS = ("proxy", "zero_cost", "synthetic", "supernet")
# the samplers a study file may name (their implementations: nas.samplers)
SAMPLERS = ("evolution", "evolution_plain", "nsga2", "tpe", "gp", "random")
DEFAULT_SAMPLER = "evolution"
DATASETS = ("digits", "digit_pairs", "cifar10", "cifar100", "imagefolder", "huggingface", "synthetic")
PRUNERS = ("none", "median", "asha", "hyperband", "mo_asha")
_SI = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}

# Where a study file's default differs from the library's: a study searches many small proxies
# on a CPU, so it defaults to 16-px images and a shorter, smaller-batch recipe on the CPU.
STUDY_DEFAULTS: dict[tuple[type, str], Any] = {
    (LibraryData, "img_size"): 16,        # evaluators.DataSpec: 32
    (ProxyConfig, "epochs"): 3,           # evaluators.ProxyConfig: 5
    (ProxyConfig, "batch_size"): 64,      # evaluators.ProxyConfig: 128
    (ProxyConfig, "device"): "cpu",       # evaluators.ProxyConfig: "auto"
}


def _study(owner: type, name: str, **rules: Any) -> Any:
    """``borrow`` with the study's default from ``STUDY_DEFAULTS`` (else the library's)."""
    if (owner, name) in STUDY_DEFAULTS:
        rules["default"] = STUDY_DEFAULTS[owner, name]
    return borrow(owner, name, **rules)


# --- irregular values: counts, name lists, ranges, knobs -----------------------------------
def parse_count(value: Any, what: str) -> int:
    """``"50M"`` / ``"1.3G"`` / ``"800K"`` / ``12000000`` -> an int count."""
    if isinstance(value, bool):
        raise NasError(f"{what} must be a number like 50M or 1.3G, got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise NasError(f"{what} must be positive, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*([kKmMgGtT]?)\s*", value)
        if m:
            n = float(m.group(1)) * _SI[m.group(2).upper()]
            if n > 0:
                return int(round(n))
    raise NasError(f"{what} must be a positive count like 50M, 1.3G or 800K, got {value!r}")


def format_count(n: float | int | None) -> str:
    """12_300_000 -> ``"12.3M"``."""
    if n is None:
        return "-"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _count(ctx: Ctx, table: str, key: str, value: Any) -> int:
    try:
        return parse_count(value, key)
    except NasError as e:
        raise ctx.error(table, key, str(e)) from None


def _names(*, allowed: tuple[str, ...] | None = None, registry: str | None = None, source: str = "operators"):
    """A parser for a list of names: ``allowed`` ones, or those of a registry (``operators.X``,
    imported when a file is parsed, so importing this module stays cheap)."""

    def parse(ctx: Ctx, table: str, key: str, value: Any) -> tuple[str, ...]:
        if registry is not None:
            import importlib

            reg = getattr(importlib.import_module(source), registry)
            if not hasattr(reg, "unknown_message"):  # a plain mapping (e.g. PRESETS)
                return str_list(ctx, table, key, value, allowed=list(reg))
            return str_list(ctx, table, key, value, registry=reg)
        return str_list(ctx, table, key, value, allowed=list(allowed or ()))

    return parse


def _numbers(*, lo: float | None = None, gt: float | None = None, what: str = ""):
    """A parser for a number or a non-empty list of numbers (``>= lo`` or ``> gt``) -> floats."""

    def ok(x: Any) -> bool:
        return (isinstance(x, (int, float)) and not isinstance(x, bool)
                and (lo is None or x >= lo) and (gt is None or x > gt))

    def parse(ctx: Ctx, table: str, key: str, value: Any) -> tuple[float, ...]:
        v = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(v, list) or not v or not all(ok(x) for x in v):
            raise ctx.error(table, key, f"{key!r} must be {what}, got {value!r}")
        return tuple(float(x) for x in v)

    return parse


def _int_range(ctx: Ctx, table: str, key: str, value: Any, lo: int = 1) -> IntRange:
    """``[low, high]``, ``{low=, high=, step=}`` or a single int."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if isinstance(value, list) and len(value) == 2:
        value = {"low": value[0], "high": value[1]}
    if not isinstance(value, dict):
        raise ctx.error(table, key, f"{key!r} must be [low, high] or {{low=, high=, step=}}, got {value!r}")
    check_keys(ctx, table, value, ["low", "high", "step"])
    low = int_value(ctx, table, key, value.get("low"), lo)
    high = int_value(ctx, table, key, value.get("high", low), lo)
    step = int_value(ctx, table, key, value.get("step", 1), 1)
    if high < low:
        raise ctx.error(table, key, f"{key!r}: high={high} is below low={low}")
    return IntRange(low, high, step)


def _ranges(hi: int | None = None):
    """A parser for an ``IntRange`` of values >= 1 (and a ``high`` <= ``hi``)."""

    def parse(ctx: Ctx, table: str, key: str, value: Any) -> IntRange:
        r = _int_range(ctx, table, key, value, lo=1)
        if hi is not None and r.high > hi:
            raise ctx.error(table, key, f"{key!r} must be between 1 and {hi} (a genome has at most {hi}), got {r.high}")
        return r

    return parse


def _knob_range(ctx: Ctx, table: str, name: str, value: Any, knob: Any) -> KnobRange:
    """A knob's range from the file, checked against the operator's declared ``Knob`` type."""
    t = knob.type
    kind = {int: "int", float: "float", bool: "bool", str: "str"}.get(t)
    if kind is None:
        raise ctx.error(table, name, f"knob {name!r} has type {t.__name__}, which the search cannot vary; "
                                     "leave it at its default")
    if not isinstance(value, (list, dict)):
        value = [value]
    if isinstance(value, list):
        if not value:
            raise ctx.error(table, name, f"knob {name!r} needs at least one value")
        out = []
        for v in value:
            ok = isinstance(v, t) and not (isinstance(v, bool) and t is not bool)
            if t is float and isinstance(v, int) and not isinstance(v, bool):
                v, ok = float(v), True
            if not ok:
                raise ctx.error(table, name, f"knob {name!r} takes {t.__name__} values, got {v!r}")
            if kind in ("int", "float") and v <= 0 and name not in ("shift",):
                raise ctx.error(table, name, f"knob {name!r} values must be positive, got {v!r}")
            out.append(v)
        return KnobRange(name, choices=tuple(dict.fromkeys(out)), kind=kind)
    if kind not in ("int", "float"):
        raise ctx.error(table, name, f"knob {name!r} is {t.__name__}: give a list of values, not a range")
    check_keys(ctx, table, value, ["low", "high", "step", "log"])
    if "low" not in value or "high" not in value:
        raise ctx.error(table, name, f"knob {name!r}: a range needs low and high")
    low = num_value(ctx, table, name, value["low"], gt=0.0)
    high = num_value(ctx, table, name, value["high"], gt=0.0)
    if high < low:
        raise ctx.error(table, name, f"knob {name!r}: high={high:g} is below low={low:g}")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ctx.error(table, name, f"knob {name!r} is an integer knob: low/high must be integers")
    step = value.get("step")
    if step is not None:
        step = num_value(ctx, table, name, step, gt=0.0)
    log = bool(value.get("log", False))
    return KnobRange(name, low=low, high=high, step=step, log=log, kind=kind)


def _knob_combos(knobs: tuple[KnobRange, ...]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for k in knobs:
        combos = [{**c, k.name: v} for c in combos for v in k.values()]
    return combos[:64]


def _stems(ctx: Ctx, T: str, key: str, raw: Any) -> tuple[StemSpace, ...]:
    """``stems``: a list of ``{kind, patch_size=[...], <knob>=...}`` or of names, or a table."""
    from operators import STEMS

    if isinstance(raw, dict):
        raw = [{"kind": k, **(v if isinstance(v, dict) else {})} for k, v in raw.items()]
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ctx.error(T, "stems", "'stems' must be a list like [{kind=\"patchify\", patch_size=[2, 4]}]")
    stems = []
    for s in raw:
        if isinstance(s, str):
            s = {"kind": s}
        if not isinstance(s, dict) or "kind" not in s:
            raise ctx.error(T, "stems", f"each stem needs a kind (one of {', '.join(STEMS.names())}), got {s!r}")
        kind = s["kind"]
        if kind not in STEMS:
            raise ctx.error(T, "stems", STEMS.unknown_message(kind))
        cls = STEMS.get(kind)
        known = cls.knobs()
        check_keys(ctx, T, s, ["kind", "patch_size", *known])
        ps = s.get("patch_size", [4])
        ps = [ps] if isinstance(ps, int) else ps
        if not isinstance(ps, list) or not ps or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in ps):
            raise ctx.error(T, "patch_size", f"stem {kind!r}: patch_size must be a positive int or a list of them, got {ps!r}")
        knobs = tuple(_knob_range(ctx, T, k, v, known[k]) for k, v in s.items() if k in known)
        for p in ps:
            for combo in _knob_combos(knobs):
                if (why := cls.check(p, combo)) is not None:
                    raise ctx.error(T, "stems", f"stem {kind!r} with patch_size={p}: {why}")
        stems.append(StemSpace(kind, tuple(ps), knobs))
    return tuple(stems)


def _mixers(ctx: Ctx, T: str, key: str, raw: Any) -> tuple[MixerSpace, ...]:
    """``mixers``: a list of mixer names, or ``[space.mixers.<name>]`` tables of knob ranges."""
    from operators import MIXERS

    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        raw = {name: {} for name in raw if isinstance(name, str)} if all(isinstance(n, str) for n in raw) else None
    if not isinstance(raw, dict) or not raw:
        raise ctx.error(T, "mixers", "'mixers' must be a list of mixer names or [space.mixers.<name>] tables")
    mixers = []
    for name, knobs in raw.items():
        if name not in MIXERS:
            raise ctx.error(join(T, "mixers"), name, MIXERS.unknown_message(name))
        if not isinstance(knobs, dict):
            raise ctx.error(join(T, "mixers"), name, f"mixer {name!r} must map knob names to ranges, got {knobs!r}")
        known = MIXERS.get(name).knobs()
        table = f"space.mixers.{name}"
        for k in knobs:
            if k not in known:
                hint = did_you_mean(k, known, cutoff=0.5)
                raise ctx.error(table, k, f"mixer {name!r} has no knob {k!r}{hint}; its knobs: "
                                          f"{', '.join(known) or 'none'}")
        mixers.append(MixerSpace(name, tuple(_knob_range(ctx, table, k, v, known[k]) for k, v in knobs.items())))
    return tuple(mixers)


def _downsample(ctx: Ctx, T: str, key: str, value: Any) -> tuple[str, ...]:
    from operators import DOWNSAMPLERS

    ds = str_list(ctx, T, key, value, registry=DOWNSAMPLERS)
    if "none" in ds:
        raise ctx.error(T, key, "a pyramid downsamples between stages: 'none' is not allowed here; "
                                f"allowed: {', '.join(n for n in DOWNSAMPLERS.names() if n != 'none')}")
    return ds


def _layer_scale(ctx: Ctx, T: str, key: str, value: Any) -> tuple[float | None, ...]:
    v = value if isinstance(value, list) else [value]
    out: list[float | None] = []
    for x in v:
        if x in ("none", False):
            out.append(None)
        elif isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0:
            out.append(float(x))
        else:
            raise ctx.error(T, key, f"'layer_scale' values must be positive numbers or \"none\", got {x!r}")
    return tuple(out)


def _recipe(ctx: Ctx, T: str, key: str, value: Any) -> tuple[tuple[str, Any], ...]:
    """``[evaluator.recipe]``: extra ``ProxyConfig`` settings, passed through (checked there)."""
    return tuple(sorted(table_of(ctx, {key: value}, key, T).items()))


def _study_name(ctx: Ctx, T: str, key: str, name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ctx.error(T, "name", f"'name' must be letters, digits, '_', '-', '.', got {name!r}")
    return name


# --- the schema: one dataclass per table ---------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """``[data]``: the dataset the evaluator trains on (``digits`` is built in: sklearn's 8x8 digits)."""

    dataset: str = _study(LibraryData, "dataset", choices=DATASETS)  # + "synthetic": no images
    root: str | None = _study(LibraryData, "root")
    img_size: int = _study(LibraryData, "img_size", max=1024)
    subset: int | None = _study(LibraryData, "subset")
    num_classes: int | None = setting(None, "classes of the classifier (None: from the dataset)", min=2)
    image_column: str = _study(LibraryData, "image_column")
    label_column: str = _study(LibraryData, "label_column")
    cache_dir: str | None = setting(None, "where decoded images are kept for every worker on the machine (None: "
                                          "data_cache/ beside a SQLite store, else ~/.cache/attention-nas/data)",
                                    what="a directory path")
    decode_workers: int | None = setting(None, "processes decoding images into the cache (None: all cores)", min=1)


@dataclass(frozen=True)
class KnobRange:
    """A knob's allowed values: ``choices`` (categorical) or an int/float range."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    kind: str = "int"                  # int | float | bool | str (the knob's declared type)

    def values(self) -> list[Any]:
        """Every value (choices, or the stepped range); used for screening and validation."""
        if self.choices is not None:
            return list(self.choices)
        if self.kind == "int":
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        return [self.low, self.high]


@dataclass(frozen=True)
class MixerSpace:
    """One mixer the space may use and the ranges of the knobs it searches over."""

    name: str
    knobs: tuple[KnobRange, ...] = ()


@dataclass(frozen=True)
class StemSpace:
    kind: str
    patch_sizes: tuple[int, ...]
    knobs: tuple[KnobRange, ...] = ()


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class SpaceSpec:
    """``[space]``: which operators may be combined and how big the models may get."""

    stems: tuple[StemSpace, ...] = setting(
        (StemSpace("patchify", (2, 4)),), "stems and their patch sizes: [{kind = \"patchify\", patch_size = [2, 4]}]",
        parse=_stems)
    mixers: tuple[MixerSpace, ...] = setting(
        (MixerSpace("attention"), MixerSpace("pool")), "token mixers: a list of names or [space.mixers.<name>] "
        "tables of knob ranges", parse=_mixers)
    pos: tuple[str, ...] = setting(("none",), "position encodings", parse=_names(registry="POS_ENCODINGS"))
    shapes: tuple[str, ...] = setting(("isotropic", "pyramid"), "isotropic (one stage) and/or pyramid",
                                      parse=_names(allowed=SHAPES))
    stages: IntRange = setting(IntRange(2, 3), "stage counts of pyramids: [low, high]", parse=_ranges(hi=4))
    depth: IntRange = setting(IntRange(1, 3), "blocks per stage of a pyramid: [low, high]", parse=_ranges())
    iso_depth: IntRange = setting(IntRange(2, 6), "blocks of an isotropic (one-stage) model: [low, high]",
                                  parse=_ranges())
    width: IntRange = setting(IntRange(16, 64, 16), "channels (first stage of a pyramid): {low, high, step}",
                              parse=_ranges())
    width_growth: tuple[float, ...] = setting(
        (2.0,), "pyramid: width multiplier per stage", parse=_numbers(lo=1, what="numbers >= 1 (e.g. [1.5, 2])"))
    max_width: int | None = setting(None, "cap on any stage's width", min=1)
    mlp: tuple[str, ...] = setting(("mlp",), "channel MLPs", parse=_names(registry="CHANNEL_MLPS"))
    mlp_ratio: tuple[float, ...] = setting(
        (2.0, 4.0), "MLP hidden width / width", parse=_numbers(gt=0, what="positive numbers (e.g. [2, 4])"))
    downsample: tuple[str, ...] = setting(("conv",), "downsamplers between pyramid stages", parse=_downsample)
    head_pool: tuple[str, ...] = setting(("avg",), "classifier pooling: avg and/or cls",
                                         parse=_names(allowed=("avg", "cls")))
    layer_scale: tuple[float | None, ...] = setting((None,), "LayerScale inits (\"none\": off)", parse=_layer_scale)
    per_stage_mixer: bool = setting(True, "a different mixer per stage (hybrids)")

    @property
    def mixer_names(self) -> list[str]:
        return [m.name for m in self.mixers]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str                      # maximize | minimize


@dataclass(frozen=True)
class LatencySpec:
    """``[latency]``: where and how latency is measured."""

    device: str = setting("cpu", "the device latency is measured on", choices=("cpu", "cuda"))
    batch: int = setting(1, "images per timed forward pass", min=1)
    dtype: str = setting("float32", "the dtype of the timed model", choices=("float32", "float16", "bfloat16"))
    predict: bool = setting(False, "decide max_latency_ms from the hybrid latency predictor where it is sure, "
                                   "measure only the uncertain band")


@dataclass(frozen=True)
class ConstraintsSpec:
    """``[constraints]``: the budget; a candidate over any limit is infeasible."""

    max_flops: int | None = setting(None, "FLOPs (MACs) limit, e.g. \"50M\"", parse=_count)
    max_params: int | None = setting(None, "parameter limit, e.g. \"5M\"", parse=_count)
    max_latency_ms: float | None = setting(None, "latency limit in ms on [latency] device", gt=0.0)

    def limits(self) -> dict[str, float]:
        """Constraint name -> limit, for the constraints that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class FidelitySpec:
    """``[evaluator.fidelity]``: prune (Optuna) or stop (Ray ASHA) on per-epoch accuracy, or
    ``mo_asha``: successive halving by Pareto rank at each rung with training continued on
    promotion, for any objectives and both backends (``nas.fidelity``)."""

    pruner: str = setting("none", "the pruner (mo_asha: multi-objective successive halving)", choices=PRUNERS)
    min_epochs: int = setting(1, "epochs every trial trains before it may be pruned (mo_asha: the first rung)", min=1)
    reduction_factor: int = setting(3, "ASHA / Hyperband / MO-ASHA reduction factor (eta)", min=2)


@dataclass(frozen=True)
class SupernetSpec:
    """``[evaluator.supernet]``: the weight-sharing evaluator (``kind = "supernet"``,
    ``evaluators.supernet``): training once per study, then scoring with inherited weights."""

    steps: int | None = setting(None, "supernet training steps (None: 20 x the proxy's epochs x steps per epoch)",
                                min=1)
    paths_per_step: int = setting(1, "sampled paths trained per step (gradients accumulated)", min=1)
    strategy: str = setting("uniform", "path sampling: uniform (SPOS) or sandwich (largest + smallest of a pool)",
                            choices=("uniform", "sandwich"))
    finetune_steps: int = setting(0, "proxy-recipe steps of fine-tuning before a candidate is scored", min=0)
    confirm_top: int = setting(3, "front members then trained stand-alone with the proxy recipe (stage 2)", min=0)


@dataclass(frozen=True)
class EvaluatorSpec:
    """``[evaluator]``: how a candidate is scored: ``proxy`` training, a ``zero_cost`` proxy, or
    ``synthetic`` (a deterministic function of the genome, for tests and the sampler benchmark).
    The training settings are ``evaluators.ProxyConfig``'s (``STUDY_DEFAULTS`` for the defaults)."""

    kind: str = setting("proxy", "how candidates are scored", choices=EVALUATORS)
    epochs: int = _study(ProxyConfig, "epochs")
    batch_size: int = _study(ProxyConfig, "batch_size")
    lr: float = _study(ProxyConfig, "lr")
    weight_decay: float = _study(ProxyConfig, "weight_decay")
    device: str = _study(ProxyConfig, "device", choices=("cpu", "cuda", "auto"))
    threads: int = setting(1, "torch intra-op threads per worker (tiny proxies gain nothing from more)",
                           min=1, max=1024)
    time_limit_s: float | None = _study(ProxyConfig, "time_limit_s")
    zero_cost: str = setting("naswot", "the zero-cost proxy of kind = \"zero_cost\"", what="a zero-cost proxy name")
    recipe: tuple[tuple[str, Any], ...] = setting((), "extra ProxyConfig settings, passed through", parse=_recipe)
    fidelity: FidelitySpec = setting(FidelitySpec(), "multi-fidelity: pruning on per-epoch accuracy")
    supernet: SupernetSpec = setting(SupernetSpec(), "the weight-sharing evaluator's settings (kind = \"supernet\")")
    save_weights: bool = setting(False, "keep each trained genome's weights (for `nas export --weights`)")

    @property
    def recipe_dict(self) -> dict[str, Any]:
        return dict(self.recipe)


@dataclass(frozen=True)
class PresetsSpec:
    """``[presets]``: known architectures shown (and optionally trained) as references."""

    names: tuple[str, ...] = setting((), "preset names (search_space.PRESETS)",
                                     parse=_names(registry="PRESETS", source="search_space"))
    evaluate: bool = setting(False, "train the presets once with the study's recipe")
    warm_start: bool = setting(False, "seed the evolution sampler's first population with the presets, shrunk "
                                      "to fit the caps")


@dataclass(frozen=True)
class RaySpec:
    """``[ray]``: the Ray Tune backend's cluster and resources."""

    address: str | None = setting(None, "Ray address", what="a Ray address like \"auto\" or host:port")
    cpus_per_trial: float = setting(1.0, "CPUs per trial", gt=0.0)
    gpus_per_trial: float = setting(0.0, "GPUs per trial", min=0.0)
    max_concurrent: int | None = setting(None, "trials running at once", min=1)


def _objectives(ctx: Ctx, table: str, key: str, value: Any) -> Any:
    return _parse_objectives(ctx, value)


@dataclass(frozen=True)
class StudySpec:
    """A whole study file, typed. ``load_study(path)`` builds and validates one. The scalars sit
    in the file's ``[study]`` table (``metadata["table"]``); the other fields are tables."""

    name: str = setting(dataclasses.MISSING, "the study's name (letters, digits, '_', '-', '.')", table="study",
                        parse=_study_name)
    storage: str = setting(dataclasses.MISSING, "the study store's URL (default sqlite:///studies/<name>.db)",
                           table="study", parse=lambda ctx, table, key, value: value)  # checked with the name
    backend: str = setting("optuna", "the search backend", choices=BACKENDS, table="study")
    sampler: str = setting(DEFAULT_SAMPLER, "the sampler (nas.samplers)", choices=SAMPLERS, table="study")
    trials: int | None = setting(20, "trials to run (with timeout_s: whichever ends first)", min=1, table="study")
    timeout_s: float | None = setting(None, "stop starting trials after this many seconds", gt=0.0, table="study")
    seed: int = setting(0, "seeds the sampler and the training", min=0, table="study")
    workers: int = setting(1, "worker processes", min=1, max=256, table="study")
    data: DataSpec = setting(DataSpec(), "the dataset")
    space: SpaceSpec = setting(SpaceSpec(), "the search space")
    objectives: tuple[Objective, ...] = setting(
        (Objective("accuracy", "maximize"), Objective("flops", "minimize")),
        "objective names, or a table with names and reference_point", parse=_objectives)
    reference_point: tuple[float, ...] | None = setting(None, "the hypervolume reference point", table=None)
    constraints: ConstraintsSpec = setting(ConstraintsSpec(), "the budget")
    latency: LatencySpec = setting(LatencySpec(), "how latency is measured")
    evaluator: EvaluatorSpec = setting(EvaluatorSpec(), "how candidates are scored")
    presets: PresetsSpec = setting(PresetsSpec(), "reference architectures")
    ray: RaySpec = setting(RaySpec(), "the Ray backend")
    path: str | None = setting(None, "the file this spec was read from", table=None)

    @property
    def objective_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def prunes(self) -> bool:
        """Whether trials are stopped early: Ray's ASHA works with any objectives; Optuna's
        pruners need a single objective (a multi-objective Optuna study ignores the pruner)."""
        if self.evaluator.fidelity.pruner in ("none", "mo_asha") or self.evaluator.kind == "zero_cost":
            return False  # mo_asha decides in the trial step (nas.fidelity), not through a pruner
        return self.backend == "ray" or len(self.objectives) == 1

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.objective_names or self.constraints.max_latency_ms is not None

    def to_json(self) -> str:
        return json.dumps(_jsonable(dataclasses.asdict(self)), sort_keys=True)

    def default_reference_point(self) -> list[float]:
        """The hypervolume reference point: the stated one, else accuracy 0 and each cost at its
        constraint limit (or a generous bound derived from the space)."""
        if self.reference_point is not None:
            return list(self.reference_point)
        limits = self.constraints.limits()
        ref = []
        for o in self.objectives:
            if o.name == "accuracy":
                ref.append(0.0)
            else:
                ref.append(float(limits.get(f"max_{o.name}", 0.0)) or math.inf)
        return ref

    def replace(self, **changes: Any) -> StudySpec:
        return dataclasses.replace(self, **changes)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and math.isinf(x):
        return None
    return x



# --- parsing -------------------------------------------------------------------------------
def _parse_objectives(ctx: Ctx, d: Any) -> tuple[tuple[Objective, ...], tuple[float, ...] | None]:
    """``objectives = ["accuracy", "flops"]`` or ``[objectives] names=[...], reference_point={...}``."""
    T = "objectives"
    ref_raw = None
    if isinstance(d, dict):
        check_keys(ctx, T, d, ["names", "reference_point"])
        names = d.get("names", ["accuracy", "flops"])
        ref_raw = d.get("reference_point")
    else:
        names = d
    names = str_list(ctx, T, "names" if isinstance(d, dict) else "objectives", names, allowed=list(OBJECTIVES))
    if len(set(names)) != len(names):
        raise ctx.error(T, "names", f"objectives repeat a name: {list(names)}")
    objectives = tuple(Objective(n, OBJECTIVES[n]) for n in names)
    ref = None
    if ref_raw is not None:
        if not isinstance(ref_raw, dict):
            raise ctx.error(T, "reference_point", "'reference_point' must be a table like {accuracy = 0.0, flops = \"10M\"}")
        check_keys(ctx, T, ref_raw, list(names))
        missing = [n for n in names if n not in ref_raw]
        if missing:
            raise ctx.error(T, "reference_point", f"'reference_point' needs a value for every objective; missing: {', '.join(missing)}")
        vals = []
        for n in names:
            v = ref_raw[n]
            if n in ("flops", "params"):
                vals.append(float(parse_count(v, f"reference_point.{n}")))
            else:
                vals.append(num_value(ctx, T, n, v))
        ref = tuple(vals)
    return objectives, ref


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Parse and validate a study file; ``overrides`` replace top-level StudySpec fields."""
    p = Path(path)
    if not p.exists():
        raise NasError(f"study file {str(path)!r} does not exist")
    text = p.read_text()
    return parse_study(text, str(path), base_dir=p.resolve().parent.parent, overrides=overrides)


def parse_study(text: str, path: str = "<study>", base_dir: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> StudySpec:
    """Parse study TOML ``text``; relative SQLite paths resolve against ``base_dir`` (default: cwd)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        where = f"{path}, line {m.group(1)}, column {m.group(2)}" if m else path
        raise NasError(f"{where}: not valid TOML: {msg}") from None
    ctx = Ctx(path, text)
    fields = dataclasses.fields(StudySpec)
    scalars = [f.name for f in fields if f.metadata.get("table") == "study"]
    tables = [f.name for f in fields if "table" not in f.metadata]  # data, space, objectives, ...
    check_keys(ctx, "", raw, ["study", *tables])

    s = table_of(ctx, raw, "study", "")
    if "name" not in s:
        check_keys(ctx, "study", s, scalars)
        raise ctx.error("study", None, "needs name = \"...\" (letters, digits, '_', '-')")
    kw = parse_fields(ctx, "study", s, StudySpec, only=scalars)
    name = kw["name"]
    storage = s.get("storage", f"sqlite:///studies/{name}.db")
    if not isinstance(storage, str) or "://" not in storage:
        raise ctx.error("study", "storage", f"'storage' must be a database URL like sqlite:///studies/{name}.db "
                                            f"or postgresql://user@host/db, got {storage!r}")
    kw["storage"] = resolve_storage_url(storage, base_dir)
    kw["path"] = path
    for key in tables:
        if key == "objectives":
            if key in raw:
                kw["objectives"], kw["reference_point"] = _parse_objectives(ctx, raw[key])
            continue
        kw.update(parse_fields(ctx, "", {key: table_of(ctx, raw, key, "")}, StudySpec, only=[key]))
    data = kw["data"]
    if data.dataset in ("cifar10", "cifar100", "imagefolder", "huggingface") and not data.root:
        raise ctx.error("data", "dataset", f"dataset {data.dataset!r} needs root = \"<directory>\"")
    if kw["latency"].predict and kw["constraints"].max_latency_ms is None:
        raise ctx.error("latency", "predict", "'predict' decides a latency cap; set [constraints] max_latency_ms")

    spec = StudySpec(**kw)
    if overrides:
        spec = spec.replace(**{k: v for k, v in overrides.items() if v is not None})
    _check_whole(ctx, spec)
    return spec


def _check_whole(ctx: Ctx, spec: StudySpec) -> None:
    """Rules that span sections."""
    if spec.trials is None and spec.timeout_s is None:
        raise ctx.error("study", "trials", "give a budget: trials = N and/or timeout_s = seconds")
    f = spec.evaluator.fidelity
    if f.min_epochs > spec.evaluator.epochs:
        raise ctx.error("evaluator.fidelity", "min_epochs",
                        f"min_epochs={f.min_epochs} exceeds the epoch budget {spec.evaluator.epochs}")
    if f.pruner == "mo_asha":
        if spec.evaluator.kind not in ("proxy", "synthetic"):
            raise ctx.error("evaluator.fidelity", "pruner", f"mo_asha continues training from a rung, so it needs "
                            f"evaluator kind 'proxy' (this study's is {spec.evaluator.kind!r})")
        if f.min_epochs >= spec.evaluator.epochs:
            raise ctx.error("evaluator.fidelity", "min_epochs",
                            f"mo_asha: min_epochs={f.min_epochs} leaves no rung below the budget of "
                            f"{spec.evaluator.epochs} epochs; lower min_epochs or raise [evaluator] epochs")
    if spec.reference_point is None:
        for o in spec.objectives:
            if o.name != "accuracy" and f"max_{o.name}" not in spec.constraints.limits():
                # a reference point is needed for the hypervolume; derive it at search time
                break


def resolve_storage_url(url: str, base_dir: str | Path | None) -> str:
    """Make a relative ``sqlite:///rel/path.db`` absolute against ``base_dir``; other URLs as given."""
    if base_dir is None or not url.startswith("sqlite:///"):
        return url
    rest = url[len("sqlite:///"):]
    if rest.startswith("/") or rest.startswith(":memory:") or rest == "":
        return url
    return "sqlite:///" + str((Path(base_dir) / rest).resolve())


def data_cache_dir(spec: StudySpec) -> Path:
    """Where a study's decoded images are cached (``evaluators.data_cache``): ``[data] cache_dir``
    (relative to the study file), else ``data_cache/`` beside a SQLite store, else
    ``$XDG_CACHE_HOME/attention-nas/data`` (``~/.cache/...``) for a server store."""
    import os

    if spec.data.cache_dir:
        d = Path(spec.data.cache_dir).expanduser()
        return d if d.is_absolute() or spec.path is None else Path(spec.path).resolve().parent / d
    if spec.storage.startswith("sqlite:///"):
        db = spec.storage[len("sqlite:///"):]
        if db and not db.startswith(":memory:"):
            return Path(db).resolve().parent / "data_cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attention-nas" / "data"


def default_storage_for(name: str) -> str:
    """The store ``nas front NAME`` looks at without ``--storage``: ``studies/NAME.db`` in the cwd."""
    return "sqlite:///" + str((Path.cwd() / "studies" / f"{name}.db").resolve())


def spec_from_dict(d: dict[str, Any]) -> StudySpec:
    """Rebuild a ``StudySpec`` from ``json.loads(spec.to_json())`` (as stored on a study), by its
    fields' types; fields an older stored spec lacks keep their defaults."""
    return from_plain(StudySpec, d)
