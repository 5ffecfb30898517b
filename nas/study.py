"""Study files: ``studies/*.toml`` -> a typed, validated ``StudySpec``.

A study file names the search (storage, backend, sampler, budget, seed), the data, the space
(stems, mixers with knob ranges, position encodings, shapes, depth and width ranges), the
objectives, the constraints and the evaluator. ``load_study(path)`` parses and validates it:

- a TOML syntax error reports the file and line;
- an unknown key names the closest valid key (difflib) and the line where it appears;
- a wrong type or range says what is allowed.

Storage default: ``sqlite:///studies/<name>.db``. Relative SQLite paths written in a study
file (and the default) are resolved against the study file's directory's *parent* (the project
root for ``studies/x.toml``), so the store lands at ``studies/<name>.db`` whatever the cwd.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import NasError

BACKENDS = ("optuna", "ray")
SAMPLERS = ("nsga2", "tpe", "gp", "random")
SHAPES = ("isotropic", "pyramid")
OBJECTIVES = {"accuracy": "maximize", "flops": "minimize", "params": "minimize", "latency_ms": "minimize"}
EVALUATORS = ("proxy", "zero_cost", "synthetic")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
PRUNERS = ("none", "median", "asha", "hyperband")
_SI = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


# --- typed sections ----------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """The dataset the evaluator trains on (``digits`` is built in: sklearn's 8x8 digits)."""

    dataset: str = "digits"
    root: str | None = None
    img_size: int = 16
    subset: int | None = None          # images per split (None: all)
    num_classes: int | None = None     # None: from the dataset


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
    """Which operators may be combined and how big the models may get."""

    stems: tuple[StemSpace, ...] = (StemSpace("patchify", (2, 4)),)
    mixers: tuple[MixerSpace, ...] = (MixerSpace("attention"), MixerSpace("pool"))
    pos: tuple[str, ...] = ("none",)
    shapes: tuple[str, ...] = ("isotropic", "pyramid")
    stages: IntRange = IntRange(2, 3)          # stage counts of pyramids
    depth: IntRange = IntRange(1, 3)           # blocks per stage of a pyramid
    iso_depth: IntRange = IntRange(2, 6)       # blocks of an isotropic (one-stage) model
    width: IntRange = IntRange(16, 64, 16)     # channels (first stage of a pyramid)
    width_growth: tuple[float, ...] = (2.0,)   # pyramid: width multiplier per stage
    max_width: int | None = None
    mlp: tuple[str, ...] = ("mlp",)
    mlp_ratio: tuple[float, ...] = (2.0, 4.0)
    downsample: tuple[str, ...] = ("conv",)
    head_pool: tuple[str, ...] = ("avg",)
    layer_scale: tuple[float | None, ...] = (None,)
    per_stage_mixer: bool = True              # a different mixer per stage (hybrids)

    @property
    def mixer_names(self) -> list[str]:
        return [m.name for m in self.mixers]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str                      # maximize | minimize


@dataclass(frozen=True)
class LatencySpec:
    device: str = "cpu"
    batch: int = 1
    dtype: str = "float32"
    predict: bool = False  # decide max_latency_ms from the hybrid predictor where it is sure (issue 15)


@dataclass(frozen=True)
class ConstraintsSpec:
    max_flops: int | None = None
    max_params: int | None = None
    max_latency_ms: float | None = None

    def limits(self) -> dict[str, float]:
        """Constraint name -> limit, for the constraints that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class FidelitySpec:
    """Multi-fidelity: prune (Optuna) or stop (Ray ASHA) on per-epoch accuracy."""

    pruner: str = "none"                # none | median | asha | hyperband
    min_epochs: int = 1
    reduction_factor: int = 3


@dataclass(frozen=True)
class EvaluatorSpec:
    """How a candidate is scored: ``proxy`` training, a ``zero_cost`` proxy, or ``synthetic``
    (a deterministic function of the genome, for tests and the sampler benchmark)."""

    kind: str = "proxy"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    device: str = "cpu"
    threads: int = 1                    # torch intra-op threads per worker (tiny proxies gain nothing from more)
    time_limit_s: float | None = None
    zero_cost: str = "naswot"
    recipe: tuple[tuple[str, Any], ...] = ()  # extra ProxyTrainer settings, passed through
    fidelity: FidelitySpec = FidelitySpec()
    save_weights: bool = False          # keep each trained genome's weights (for `nas export --weights`)

    @property
    def recipe_dict(self) -> dict[str, Any]:
        return dict(self.recipe)


@dataclass(frozen=True)
class PresetsSpec:
    names: tuple[str, ...] = ()
    evaluate: bool = False


@dataclass(frozen=True)
class RaySpec:
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None


@dataclass(frozen=True)
class StudySpec:
    """A whole study file, typed. ``load_study(path)`` builds and validates one."""

    name: str
    storage: str
    backend: str = "optuna"
    sampler: str = "nsga2"
    trials: int | None = 20
    timeout_s: float | None = None
    seed: int = 0
    workers: int = 1
    data: DataSpec = DataSpec()
    space: SpaceSpec = SpaceSpec()
    objectives: tuple[Objective, ...] = (Objective("accuracy", "maximize"), Objective("flops", "minimize"))
    reference_point: tuple[float, ...] | None = None
    constraints: ConstraintsSpec = ConstraintsSpec()
    latency: LatencySpec = LatencySpec()
    evaluator: EvaluatorSpec = EvaluatorSpec()
    presets: PresetsSpec = PresetsSpec()
    ray: RaySpec = RaySpec()
    path: str | None = None

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
        if self.evaluator.fidelity.pruner == "none" or self.evaluator.kind == "zero_cost":
            return False
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


# --- parsing helpers ---------------------------------------------------------------------
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


class _Ctx:
    """Where we are in the file, to name the file, the table and the line in errors."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def line_of(self, key: str, table: str) -> int | None:
        """Best effort: the line where ``key`` is assigned (after ``[table]`` if present)."""
        start = 0
        if table:
            header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
            for i, line in enumerate(self.lines):
                if header.match(line):
                    start = i
                    break
        pat = re.compile(r"(^|[\s{,])" + re.escape(key) + r"\s*=")
        for i in range(start, len(self.lines)):
            if pat.search(self.lines[i].split("#", 1)[0]):
                return i + 1
        for i, line in enumerate(self.lines):  # e.g. dotted keys or [table.key] headers
            if re.search(r"\b" + re.escape(key) + r"\b", line.split("#", 1)[0]):
                return i + 1
        return None

    def error(self, table: str, key: str | None, msg: str) -> NasError:
        line = self.line_of(key, table) if key else None
        where = f"{self.path}" + (f", line {line}" if line else "")
        scope = f"[{table}] " if table else ""
        return NasError(f"{where}: {scope}{msg}")


def _check_keys(ctx: _Ctx, table: str, d: dict[str, Any], allowed: list[str]) -> None:
    for k in d:
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ctx.error(table, k, f"unknown key {k!r}{hint}; valid keys: {', '.join(allowed)}")


def _table(ctx: _Ctx, d: dict[str, Any], key: str, parent: str) -> dict[str, Any]:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise ctx.error(parent, key, f"{key!r} must be a table ([{_join(parent, key)}]), got {type(v).__name__}")
    return v


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


def _typed(ctx: _Ctx, table: str, key: str, value: Any, kind: type | tuple, what: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ctx.error(table, key, f"{key!r} must be {what}, got {value!r}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kinds):
        raise ctx.error(table, key, f"{key!r} must be {what}, got {value!r}")
    return value


def _int(ctx: _Ctx, table: str, key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    v = _typed(ctx, table, key, value, int, "an integer")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ctx.error(table, key, f"{key!r} must be an integer {rng}, got {v}")
    return v


def _num(ctx: _Ctx, table: str, key: str, value: Any, lo: float | None = None, positive: bool = False) -> float:
    v = _typed(ctx, table, key, value, float, "a number")
    if positive and v <= 0:
        raise ctx.error(table, key, f"{key!r} must be a positive number, got {v}")
    if lo is not None and v < lo:
        raise ctx.error(table, key, f"{key!r} must be >= {lo}, got {v}")
    return v


def _choice(ctx: _Ctx, table: str, key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ctx.error(table, key, f"{key!r} must be one of {', '.join(allowed)}; got {value!r}{hint}")
    return value


def _str_list(ctx: _Ctx, table: str, key: str, value: Any, allowed: list[str] | None = None,
              registry: Any = None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ctx.error(table, key, f"{key!r} must be a non-empty list of names, got {value!r}")
    for v in value:
        if registry is not None and v not in registry:
            raise ctx.error(table, key, f"{key!r}: {registry.unknown_message(v)}")
        if allowed is not None and v not in allowed:
            close = difflib.get_close_matches(v, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ctx.error(table, key, f"{key!r}: {v!r} is not allowed{hint}; allowed: {', '.join(allowed)}")
    return tuple(value)


def _int_range(ctx: _Ctx, table: str, key: str, value: Any, lo: int = 1) -> IntRange:
    """``[low, high]``, ``{low=, high=, step=}`` or a single int."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if isinstance(value, list) and len(value) == 2:
        value = {"low": value[0], "high": value[1]}
    if not isinstance(value, dict):
        raise ctx.error(table, key, f"{key!r} must be [low, high] or {{low=, high=, step=}}, got {value!r}")
    _check_keys(ctx, table, value, ["low", "high", "step"])
    low = _int(ctx, table, key, value.get("low"), lo)
    high = _int(ctx, table, key, value.get("high", low), lo)
    step = _int(ctx, table, key, value.get("step", 1), 1)
    if high < low:
        raise ctx.error(table, key, f"{key!r}: high={high} is below low={low}")
    return IntRange(low, high, step)


def _knob_range(ctx: _Ctx, table: str, name: str, value: Any, knob: Any) -> KnobRange:
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
    _check_keys(ctx, table, value, ["low", "high", "step", "log"])
    if "low" not in value or "high" not in value:
        raise ctx.error(table, name, f"knob {name!r}: a range needs low and high")
    low = _num(ctx, table, name, value["low"], positive=True)
    high = _num(ctx, table, name, value["high"], positive=True)
    if high < low:
        raise ctx.error(table, name, f"knob {name!r}: high={high:g} is below low={low:g}")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ctx.error(table, name, f"knob {name!r} is an integer knob: low/high must be integers")
    step = value.get("step")
    if step is not None:
        step = _num(ctx, table, name, step, positive=True)
    log = bool(value.get("log", False))
    return KnobRange(name, low=low, high=high, step=step, log=log, kind=kind)


# --- sections ----------------------------------------------------------------------------
def _parse_space(ctx: _Ctx, d: dict[str, Any]) -> SpaceSpec:
    from operators import CHANNEL_MLPS, DOWNSAMPLERS, MIXERS, POS_ENCODINGS, STEMS

    T = "space"
    allowed = ["stems", "mixers", "pos", "shapes", "stages", "depth", "iso_depth", "width", "width_growth", "max_width",
               "mlp", "mlp_ratio", "downsample", "head_pool", "layer_scale", "per_stage_mixer"]
    _check_keys(ctx, T, d, allowed)
    kw: dict[str, Any] = {}

    # stems: list of {kind, patch_size=[...], knob=...} or a list of names
    if "stems" in d:
        raw = d["stems"]
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
            _check_keys(ctx, T, s, ["kind", "patch_size", *known])
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
        kw["stems"] = tuple(stems)

    # mixers: list of names, or table name -> {knob = range}
    if "mixers" in d:
        raw = d["mixers"]
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list):
            raw = {name: {} for name in raw if isinstance(name, str)} if all(isinstance(n, str) for n in raw) else None
        if not isinstance(raw, dict) or not raw:
            raise ctx.error(T, "mixers", "'mixers' must be a list of mixer names or [space.mixers.<name>] tables")
        mixers = []
        for name, knobs in raw.items():
            if name not in MIXERS:
                raise ctx.error(_join(T, "mixers"), name, MIXERS.unknown_message(name))
            if not isinstance(knobs, dict):
                raise ctx.error(_join(T, "mixers"), name, f"mixer {name!r} must map knob names to ranges, got {knobs!r}")
            known = MIXERS.get(name).knobs()
            table = f"space.mixers.{name}"
            for k in knobs:
                if k not in known:
                    close = difflib.get_close_matches(k, list(known), n=1, cutoff=0.5)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ctx.error(table, k, f"mixer {name!r} has no knob {k!r}{hint}; its knobs: "
                                              f"{', '.join(known) or 'none'}")
            mixers.append(MixerSpace(name, tuple(_knob_range(ctx, table, k, v, known[k]) for k, v in knobs.items())))
        kw["mixers"] = tuple(mixers)

    if "pos" in d:
        kw["pos"] = _str_list(ctx, T, "pos", d["pos"], registry=POS_ENCODINGS)
    if "shapes" in d:
        kw["shapes"] = _str_list(ctx, T, "shapes", d["shapes"], allowed=list(SHAPES))
    if "stages" in d:
        kw["stages"] = _int_range(ctx, T, "stages", d["stages"], lo=1)
        if kw["stages"].high > 4:
            raise ctx.error(T, "stages", f"'stages' must be between 1 and 4 (a genome has at most 4), got {kw['stages'].high}")
    if "depth" in d:
        kw["depth"] = _int_range(ctx, T, "depth", d["depth"], lo=1)
    if "iso_depth" in d:
        kw["iso_depth"] = _int_range(ctx, T, "iso_depth", d["iso_depth"], lo=1)
    if "width" in d:
        kw["width"] = _int_range(ctx, T, "width", d["width"], lo=1)
    if "width_growth" in d:
        v = d["width_growth"]
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 1 for x in v):
            raise ctx.error(T, "width_growth", f"'width_growth' must be numbers >= 1 (e.g. [1.5, 2]), got {d['width_growth']!r}")
        kw["width_growth"] = tuple(float(x) for x in v)
    if "max_width" in d:
        kw["max_width"] = _int(ctx, T, "max_width", d["max_width"], 1)
    if "mlp" in d:
        kw["mlp"] = _str_list(ctx, T, "mlp", d["mlp"], registry=CHANNEL_MLPS)
    if "mlp_ratio" in d:
        v = d["mlp_ratio"]
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v):
            raise ctx.error(T, "mlp_ratio", f"'mlp_ratio' must be positive numbers (e.g. [2, 4]), got {d['mlp_ratio']!r}")
        kw["mlp_ratio"] = tuple(float(x) for x in v)
    if "downsample" in d:
        ds = _str_list(ctx, T, "downsample", d["downsample"], registry=DOWNSAMPLERS)
        if "none" in ds:
            raise ctx.error(T, "downsample", "a pyramid downsamples between stages: 'none' is not allowed here; "
                                             f"allowed: {', '.join(n for n in DOWNSAMPLERS.names() if n != 'none')}")
        kw["downsample"] = ds
    if "head_pool" in d:
        kw["head_pool"] = _str_list(ctx, T, "head_pool", d["head_pool"], allowed=["avg", "cls"])
    if "layer_scale" in d:
        v = d["layer_scale"]
        v = v if isinstance(v, list) else [v]
        out = []
        for x in v:
            if x in ("none", False):
                out.append(None)
            elif isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0:
                out.append(float(x))
            else:
                raise ctx.error(T, "layer_scale", f"'layer_scale' values must be positive numbers or \"none\", got {x!r}")
        kw["layer_scale"] = tuple(out)
    if "per_stage_mixer" in d:
        kw["per_stage_mixer"] = _typed(ctx, T, "per_stage_mixer", d["per_stage_mixer"], bool, "true or false")
    return SpaceSpec(**kw)


def _knob_combos(knobs: tuple[KnobRange, ...]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for k in knobs:
        combos = [{**c, k.name: v} for c in combos for v in k.values()]
    return combos[:64]


def _parse_objectives(ctx: _Ctx, d: Any) -> tuple[tuple[Objective, ...], tuple[float, ...] | None]:
    """``objectives = ["accuracy", "flops"]`` or ``[objectives] names=[...], reference_point={...}``."""
    T = "objectives"
    ref_raw = None
    if isinstance(d, dict):
        _check_keys(ctx, T, d, ["names", "reference_point"])
        names = d.get("names", ["accuracy", "flops"])
        ref_raw = d.get("reference_point")
    else:
        names = d
    names = _str_list(ctx, T, "names" if isinstance(d, dict) else "objectives", names, allowed=list(OBJECTIVES))
    if len(set(names)) != len(names):
        raise ctx.error(T, "names", f"objectives repeat a name: {list(names)}")
    objectives = tuple(Objective(n, OBJECTIVES[n]) for n in names)
    ref = None
    if ref_raw is not None:
        if not isinstance(ref_raw, dict):
            raise ctx.error(T, "reference_point", "'reference_point' must be a table like {accuracy = 0.0, flops = \"10M\"}")
        _check_keys(ctx, T, ref_raw, list(names))
        missing = [n for n in names if n not in ref_raw]
        if missing:
            raise ctx.error(T, "reference_point", f"'reference_point' needs a value for every objective; missing: {', '.join(missing)}")
        vals = []
        for n in names:
            v = ref_raw[n]
            if n in ("flops", "params"):
                vals.append(float(parse_count(v, f"reference_point.{n}")))
            else:
                vals.append(_num(ctx, T, n, v))
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
    ctx = _Ctx(path, text)
    top = ["study", "data", "space", "objectives", "constraints", "latency", "evaluator", "presets", "ray"]
    _check_keys(ctx, "", raw, top)

    s = _table(ctx, raw, "study", "")
    study_keys = ["name", "storage", "backend", "sampler", "trials", "timeout_s", "seed", "workers"]
    _check_keys(ctx, "study", s, study_keys)
    if "name" not in s:
        raise ctx.error("study", None, "needs name = \"...\" (letters, digits, '_', '-')")
    name = s["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ctx.error("study", "name", f"'name' must be letters, digits, '_', '-', '.', got {name!r}")
    kw: dict[str, Any] = {"name": name, "path": path}
    storage = s.get("storage", f"sqlite:///studies/{name}.db")
    if not isinstance(storage, str) or "://" not in storage:
        raise ctx.error("study", "storage", f"'storage' must be a database URL like sqlite:///studies/{name}.db "
                                            f"or postgresql://user@host/db, got {storage!r}")
    kw["storage"] = resolve_storage_url(storage, base_dir)
    if "backend" in s:
        kw["backend"] = _choice(ctx, "study", "backend", s["backend"], BACKENDS)
    if "sampler" in s:
        kw["sampler"] = _choice(ctx, "study", "sampler", s["sampler"], SAMPLERS)
    if "trials" in s:
        kw["trials"] = _int(ctx, "study", "trials", s["trials"], 1)
    if "timeout_s" in s:
        kw["timeout_s"] = _num(ctx, "study", "timeout_s", s["timeout_s"], positive=True)
    if "seed" in s:
        kw["seed"] = _int(ctx, "study", "seed", s["seed"], 0)
    if "workers" in s:
        kw["workers"] = _int(ctx, "study", "workers", s["workers"], 1, 256)

    dd = _table(ctx, raw, "data", "")
    _check_keys(ctx, "data", dd, ["dataset", "root", "img_size", "subset", "num_classes"])
    dkw: dict[str, Any] = {}
    if "dataset" in dd:
        dkw["dataset"] = _choice(ctx, "data", "dataset", dd["dataset"], DATASETS)
    if "root" in dd:
        dkw["root"] = _typed(ctx, "data", "root", dd["root"], str, "a directory path")
    if "img_size" in dd:
        dkw["img_size"] = _int(ctx, "data", "img_size", dd["img_size"], 4, 1024)
    if "subset" in dd:
        dkw["subset"] = _int(ctx, "data", "subset", dd["subset"], 1)
    if "num_classes" in dd:
        dkw["num_classes"] = _int(ctx, "data", "num_classes", dd["num_classes"], 2)
    if dkw.get("dataset") in ("cifar10", "cifar100", "imagefolder") and not dkw.get("root"):
        raise ctx.error("data", "dataset", f"dataset {dkw['dataset']!r} needs root = \"<directory>\"")
    kw["data"] = DataSpec(**dkw)

    kw["space"] = _parse_space(ctx, _table(ctx, raw, "space", ""))

    if "objectives" in raw:
        kw["objectives"], kw["reference_point"] = _parse_objectives(ctx, raw["objectives"])

    c = _table(ctx, raw, "constraints", "")
    _check_keys(ctx, "constraints", c, ["max_flops", "max_params", "max_latency_ms"])
    ckw: dict[str, Any] = {}
    for k in ("max_flops", "max_params"):
        if k in c:
            try:
                ckw[k] = parse_count(c[k], k)
            except NasError as e:
                raise ctx.error("constraints", k, str(e)) from None
    if "max_latency_ms" in c:
        ckw["max_latency_ms"] = _num(ctx, "constraints", "max_latency_ms", c["max_latency_ms"], positive=True)
    kw["constraints"] = ConstraintsSpec(**ckw)

    lt = _table(ctx, raw, "latency", "")
    _check_keys(ctx, "latency", lt, ["device", "batch", "dtype", "predict"])
    lkw: dict[str, Any] = {}
    if "device" in lt:
        lkw["device"] = _choice(ctx, "latency", "device", lt["device"], ("cpu", "cuda"))
    if "batch" in lt:
        lkw["batch"] = _int(ctx, "latency", "batch", lt["batch"], 1)
    if "dtype" in lt:
        lkw["dtype"] = _choice(ctx, "latency", "dtype", lt["dtype"], ("float32", "float16", "bfloat16"))
    if "predict" in lt:
        lkw["predict"] = _typed(ctx, "latency", "predict", lt["predict"], bool, "true or false")
        if lkw["predict"] and "max_latency_ms" not in c:
            raise ctx.error("latency", "predict", "'predict' decides a latency cap; set [constraints] max_latency_ms")
    kw["latency"] = LatencySpec(**lkw)

    e = _table(ctx, raw, "evaluator", "")
    ekeys = ["kind", "epochs", "batch_size", "lr", "weight_decay", "device", "threads", "time_limit_s", "zero_cost",
             "recipe", "fidelity", "save_weights"]
    _check_keys(ctx, "evaluator", e, ekeys)
    ekw: dict[str, Any] = {}
    if "kind" in e:
        ekw["kind"] = _choice(ctx, "evaluator", "kind", e["kind"], EVALUATORS)
    if "epochs" in e:
        ekw["epochs"] = _int(ctx, "evaluator", "epochs", e["epochs"], 1)
    if "batch_size" in e:
        ekw["batch_size"] = _int(ctx, "evaluator", "batch_size", e["batch_size"], 1)
    if "lr" in e:
        ekw["lr"] = _num(ctx, "evaluator", "lr", e["lr"], positive=True)
    if "weight_decay" in e:
        ekw["weight_decay"] = _num(ctx, "evaluator", "weight_decay", e["weight_decay"], lo=0.0)
    if "device" in e:
        ekw["device"] = _choice(ctx, "evaluator", "device", e["device"], ("cpu", "cuda", "auto"))
    if "threads" in e:
        ekw["threads"] = _int(ctx, "evaluator", "threads", e["threads"], 1, 1024)
    if "time_limit_s" in e:
        ekw["time_limit_s"] = _num(ctx, "evaluator", "time_limit_s", e["time_limit_s"], positive=True)
    if "zero_cost" in e:
        ekw["zero_cost"] = _typed(ctx, "evaluator", "zero_cost", e["zero_cost"], str, "a zero-cost proxy name")
    if "save_weights" in e:
        ekw["save_weights"] = _typed(ctx, "evaluator", "save_weights", e["save_weights"], bool, "true or false")
    if "recipe" in e:
        r = _table(ctx, e, "recipe", "evaluator")
        ekw["recipe"] = tuple(sorted(r.items()))
    f = _table(ctx, e, "fidelity", "evaluator")
    _check_keys(ctx, "evaluator.fidelity", f, ["pruner", "min_epochs", "reduction_factor"])
    fkw: dict[str, Any] = {}
    if "pruner" in f:
        fkw["pruner"] = _choice(ctx, "evaluator.fidelity", "pruner", f["pruner"], PRUNERS)
    if "min_epochs" in f:
        fkw["min_epochs"] = _int(ctx, "evaluator.fidelity", "min_epochs", f["min_epochs"], 1)
    if "reduction_factor" in f:
        fkw["reduction_factor"] = _int(ctx, "evaluator.fidelity", "reduction_factor", f["reduction_factor"], 2)
    ekw["fidelity"] = FidelitySpec(**fkw)
    kw["evaluator"] = EvaluatorSpec(**ekw)

    pr = _table(ctx, raw, "presets", "")
    _check_keys(ctx, "presets", pr, ["names", "evaluate"])
    pkw: dict[str, Any] = {}
    if "names" in pr:
        from search_space import PRESETS

        pkw["names"] = _str_list(ctx, "presets", "names", pr["names"], allowed=list(PRESETS))
    if "evaluate" in pr:
        pkw["evaluate"] = _typed(ctx, "presets", "evaluate", pr["evaluate"], bool, "true or false")
    kw["presets"] = PresetsSpec(**pkw)

    ry = _table(ctx, raw, "ray", "")
    _check_keys(ctx, "ray", ry, ["address", "cpus_per_trial", "gpus_per_trial", "max_concurrent"])
    rkw: dict[str, Any] = {}
    if "address" in ry:
        rkw["address"] = _typed(ctx, "ray", "address", ry["address"], str, "a Ray address like \"auto\" or host:port")
    if "cpus_per_trial" in ry:
        rkw["cpus_per_trial"] = _num(ctx, "ray", "cpus_per_trial", ry["cpus_per_trial"], positive=True)
    if "gpus_per_trial" in ry:
        rkw["gpus_per_trial"] = _num(ctx, "ray", "gpus_per_trial", ry["gpus_per_trial"], lo=0.0)
    if "max_concurrent" in ry:
        rkw["max_concurrent"] = _int(ctx, "ray", "max_concurrent", ry["max_concurrent"], 1)
    kw["ray"] = RaySpec(**rkw)

    spec = StudySpec(**kw)
    if overrides:
        spec = spec.replace(**{k: v for k, v in overrides.items() if v is not None})
    _check_whole(ctx, spec)
    return spec


def _check_whole(ctx: _Ctx, spec: StudySpec) -> None:
    """Rules that span sections."""
    if spec.trials is None and spec.timeout_s is None:
        raise ctx.error("study", "trials", "give a budget: trials = N and/or timeout_s = seconds")
    if spec.evaluator.fidelity.min_epochs > spec.evaluator.epochs:
        raise ctx.error("evaluator.fidelity", "min_epochs",
                        f"min_epochs={spec.evaluator.fidelity.min_epochs} exceeds the epoch budget {spec.evaluator.epochs}")
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


def default_storage_for(name: str) -> str:
    """The store ``nas front NAME`` looks at without ``--storage``: ``studies/NAME.db`` in the cwd."""
    return "sqlite:///" + str((Path.cwd() / "studies" / f"{name}.db").resolve())


def spec_from_dict(d: dict[str, Any]) -> StudySpec:
    """Rebuild a ``StudySpec`` from ``json.loads(spec.to_json())`` (as stored on a study)."""

    def tup(x: Any) -> Any:
        return tuple(tup(v) for v in x) if isinstance(x, list) else x

    def knob(k: dict[str, Any]) -> KnobRange:
        return KnobRange(**{**k, "choices": tup(k["choices"]) if k.get("choices") is not None else None})

    sp = dict(d["space"])
    space = SpaceSpec(
        stems=tuple(StemSpace(s["kind"], tuple(s["patch_sizes"]), tuple(knob(k) for k in s["knobs"])) for s in sp["stems"]),
        mixers=tuple(MixerSpace(m["name"], tuple(knob(k) for k in m["knobs"])) for m in sp["mixers"]),
        stages=IntRange(**sp["stages"]), depth=IntRange(**sp["depth"]), iso_depth=IntRange(**sp["iso_depth"]),
        width=IntRange(**sp["width"]),
        **{k: tup(v) for k, v in sp.items() if k not in ("stems", "mixers", "stages", "depth", "iso_depth", "width")},
    )
    ev = dict(d["evaluator"])
    evaluator = EvaluatorSpec(**{**ev, "recipe": tuple(tuple(kv) for kv in ev.get("recipe", [])),
                                 "fidelity": FidelitySpec(**ev["fidelity"])})
    ref = d.get("reference_point")
    return StudySpec(
        name=d["name"], storage=d["storage"], backend=d["backend"], sampler=d["sampler"], trials=d["trials"],
        timeout_s=d["timeout_s"], seed=d["seed"], workers=d["workers"], data=DataSpec(**d["data"]), space=space,
        objectives=tuple(Objective(**o) for o in d["objectives"]),
        reference_point=tuple(ref) if ref is not None else None,
        constraints=ConstraintsSpec(**d["constraints"]), latency=LatencySpec(**d["latency"]),
        evaluator=evaluator, presets=PresetsSpec(names=tuple(d["presets"]["names"]), evaluate=d["presets"]["evaluate"]),
        ray=RaySpec(**d["ray"]), path=d.get("path"),
    )
