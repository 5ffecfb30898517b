"""The genome: a frozen, JSON-serialisable description of one architecture.

An ``ArchSpec`` is a stem, a tuple of stages and a head. One stage is an isotropic (ViT-like)
model; two to four stages with downsamplers make a pyramid; a different mixer per stage makes
a hybrid (conv early, attention late, as in CAFormer/CoAtNet).

``to_json()`` / ``from_json()`` round-trip exactly and ``arch_id`` is the sha1 of the canonical
JSON, so it is the same in every process and Python version. ``validate()`` raises a
``ValueError`` that names the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from operators.errors import did_you_mean
from search_space.validate import HEAD_POOLS, ImgSize, img_hw, img_size_value  # noqa: F401  (the genome's vocabulary, re-exported)
from search_space.validate import validate as _validate

GENOME_VERSION = 1
Knobs = tuple[tuple[str, Any], ...]
def _freeze_knobs(knobs: Any, where: str) -> Knobs:
    if knobs is None:
        return ()
    if isinstance(knobs, dict):
        items = knobs.items()
    elif isinstance(knobs, (tuple, list)):
        items = [tuple(kv) for kv in knobs]
    else:
        raise ValueError(f"{where} must be a mapping of knob name to value, got {type(knobs).__name__}")
    out = []
    for k, v in items:
        if isinstance(v, list):
            v = tuple(v)
        if not isinstance(v, (bool, int, float, str, tuple)) and v is not None:
            raise ValueError(f"{where}.{k} must be a bool, int, float or string, got {type(v).__name__}")
        out.append((str(k), v))
    return tuple(sorted(out))


@dataclass(frozen=True)
class StemSpec:
    """How pixels become tokens: ``kind`` from ``operators.STEMS``; ``patch_size`` is its stride."""

    kind: str = "patchify"
    patch_size: int = 16
    knobs: Knobs = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "knobs", _freeze_knobs(self.knobs, "stem.knobs"))

    @property
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``depth`` unified blocks of width ``dim``.

    ``mixer`` names a token mixer with its typed ``mixer_knobs``; ``pos`` is the stage's position
    encoding (a grid encoding added where the stage starts, or one inside the mixer's attention);
    ``mlp``/``mlp_ratio`` the channel MLP; ``downsample`` how the stage enters from the previous
    one (``"none"`` keeps the grid; the first stage always follows the stem directly);
    ``layer_scale`` LayerScale's init value or None; ``channel_attn`` an optional channel-attention
    module after the mixer.
    """

    depth: int
    dim: int
    mixer: str
    mixer_knobs: Knobs = ()
    pos: str = "none"
    mlp: str = "mlp"
    mlp_ratio: float = 4.0
    downsample: str = "none"
    layer_scale: float | None = None
    channel_attn: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mixer_knobs", _freeze_knobs(self.mixer_knobs, "mixer_knobs"))
        if isinstance(self.mlp_ratio, int) and not isinstance(self.mlp_ratio, bool):
            object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        if isinstance(self.layer_scale, int) and not isinstance(self.layer_scale, bool):
            object.__setattr__(self, "layer_scale", float(self.layer_scale))

    @property
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.mixer_knobs)


@dataclass(frozen=True)
class HeadSpec:
    """The classifier: ``pool`` is ``"avg"`` (global average) or ``"cls"`` (a class token that
    attends over the final grid, CaiT's class attention); ``mlp_ratio`` > 0 inserts an MLP
    head of that hidden ratio (MetaFormer's MlpHead)."""

    pool: str = "avg"
    mlp_ratio: float = 0.0
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("mlp_ratio", "drop_rate"):
            v = getattr(self, name)
            if isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, name, float(v))




@dataclass(frozen=True)
class ArchSpec:
    """A whole architecture; see the module docstring."""

    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    num_classes: int = 1000
    in_chans: int = 3
    img_size: ImgSize = 224

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "img_size", img_size_value(self.img_size))

    @property
    def img_hw(self) -> tuple[int, int]:
        """``(H, W)`` of ``img_size`` (which is ``N`` for a square, ``[H, W]`` in JSON otherwise)."""
        return img_hw(self.img_size)

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stages"] = list(d["stages"])
        d["stem"]["knobs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.stem.knobs}
        for sd, s in zip(d["stages"], self.stages):
            sd["mixer_knobs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in s.mixer_knobs}
        d["version"] = GENOME_VERSION
        return d

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys, no whitespace) unless ``indent`` is given."""
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        if not isinstance(d, dict):
            raise ValueError(f"a genome must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("version", GENOME_VERSION)
        if version != GENOME_VERSION:
            raise ValueError(f"genome version {version} is not supported (this code reads version {GENOME_VERSION})")
        _check_keys(d, cls, "genome")
        if "stem" not in d or "stages" not in d:
            raise ValueError("a genome needs 'stem' and 'stages'")
        _check_keys(d["stem"], StemSpec, "stem")
        stages = d["stages"]
        if not isinstance(stages, (list, tuple)):
            raise ValueError("genome 'stages' must be a list of stage objects")
        for i, s in enumerate(stages):
            _check_keys(s, StageSpec, f"stages[{i}]")
        head = d.get("head", {})
        _check_keys(head, HeadSpec, "head")
        spec = cls(
            stem=StemSpec(**d["stem"]),
            stages=tuple(StageSpec(**s) for s in stages),
            head=HeadSpec(**head),
            **{k: d[k] for k in ("num_classes", "in_chans", "img_size") if k in d},
        )
        _check_types(spec)
        return spec

    @classmethod
    def from_json(cls, s: str) -> ArchSpec:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"the genome is not valid JSON: {e}") from None
        return cls.from_dict(d)

    @functools.cached_property
    def arch_id(self) -> str:
        """sha1 of the canonical form's JSON (``canonical()``): stable across processes and
        Python versions, and the same for every way of writing one network."""
        return hashlib.sha1(self.canonical().to_json().encode()).hexdigest()

    def canonical(self) -> ArchSpec:
        """The canonical form of this genome: the same network written one way.

        - every stem and mixer knob is present: a missing knob gets its constructor default
          (read from the operator's signature, as validation reads it); a float knob given as
          an int is a float (``2`` -> ``2.0``);
        - knobs that cannot change the network are set to their defaults: a mixer's own rule
          (``TokenMixer.canonical_knobs``: ``shift``/``shuffle`` of a one-block windowed stage,
          ``focal_factor`` with one focal level);
        - ``layer_scale`` 0 is None (both build no LayerScale).

        Unknown names (an invalid genome) are left as they are, for ``validate`` to report.
        ``arch_id`` hashes this form's ``to_json()``; a genome already canonical keeps its id.
        """
        from operators import MIXERS, STEMS

        stem = self.stem
        if stem.kind in STEMS:
            stem = dataclasses.replace(stem, knobs=_filled_knobs(STEMS.get(stem.kind).knobs(), stem.knob_dict))
        stages = []
        for s in self.stages:
            changes: dict[str, Any] = {}
            if s.mixer in MIXERS:
                mixer = MIXERS.get(s.mixer)
                changes["mixer_knobs"] = mixer.canonical_knobs(_filled_knobs(mixer.knobs(), s.knob_dict),
                                                               depth=s.depth)
            if s.layer_scale is not None and s.layer_scale == 0:
                changes["layer_scale"] = None
            stages.append(dataclasses.replace(s, **changes) if changes else s)
        return self.replace(stem=stem, stages=tuple(stages))

    # --- derived shapes ------------------------------------------------------------------
    @property
    def total_stride(self) -> int:
        from operators import DOWNSAMPLERS

        stride = self.stem.patch_size
        for s in self.stages[1:]:
            stride *= DOWNSAMPLERS.get(s.downsample).stride if s.downsample in DOWNSAMPLERS else 1
        return stride

    def stage_grids(self, img_size: ImgSize | None = None) -> list[tuple[int, int]]:
        """The ``(h, w)`` feature map each stage sees at ``img_size`` (``N`` or ``(H, W)``;
        default: the genome's)."""
        from operators import DOWNSAMPLERS

        H, W = img_hw(img_size or self.img_size)
        h, w = H // self.stem.patch_size, W // self.stem.patch_size
        grids = []
        for i, s in enumerate(self.stages):
            if i > 0 and s.downsample in DOWNSAMPLERS:
                stride = DOWNSAMPLERS.get(s.downsample).stride
                h, w = -(-h // stride), -(-w // stride)
            grids.append((h, w))
        return grids

    def summary(self) -> str:
        """One line, e.g. ``patchify16 | attention x12 @192 [abs] | avg``."""
        parts = [f"{self.stem.kind}{self.stem.patch_size}"]
        for s in self.stages:
            pos = f" [{s.pos}]" if s.pos != "none" else ""
            parts.append(f"{s.mixer} x{s.depth} @{s.dim}{pos}")
        parts.append(self.head.pool + (f"+mlp{self.head.mlp_ratio:g}" if self.head.mlp_ratio else ""))
        return " | ".join(parts)

    def replace(self, **changes: Any) -> ArchSpec:
        return dataclasses.replace(self, **changes)

    def validate(self) -> ArchSpec:
        """Raise ``ValueError`` naming the field and the allowed values; return self if valid."""
        _validate(self)
        return self


def _filled_knobs(known: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with every knob of ``known`` (name -> ``operators.base.Knob``) present: missing
    ones at their default, ints given for float knobs as floats; unknown names kept."""
    out = dict(given)
    for name, knob in known.items():
        v = out.get(name, knob.default)
        if knob.type is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        out[name] = v
    return out


def _check_keys(d: Any, cls: type, where: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for k in d:
        if k not in names:
            hint = did_you_mean(k, names)
            raise ValueError(f"{where}: unknown field {k!r}{hint}; fields: {', '.join(names)}")


_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "patch_size": (int,), "depth": (int,), "dim": (int,), "mixer": (str,),
    "pos": (str,), "mlp": (str,), "mlp_ratio": (float, int), "downsample": (str,),
    "layer_scale": (float, int, type(None)), "channel_attn": (str,), "pool": (str,),
    "drop_rate": (float, int), "num_classes": (int,), "in_chans": (int,), "img_size": (int,),
}


def _check_types(spec: ArchSpec) -> None:
    def check(obj: Any, where: str) -> None:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            allowed = _TYPES.get(f.name)
            if f.name == "img_size" and isinstance(v, tuple) and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in v):
                continue  # (H, W): img_size_value made it a pair of ints
            if allowed and (not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed)):
                names = " or ".join(t.__name__ if t is not type(None) else "null" for t in allowed)
                if f.name == "img_size":
                    names = "int (a square) or [H, W]"
                raise ValueError(f"{where}.{f.name} must be {names}, got {v!r}")

    check(spec, "genome")
    check(spec.stem, "stem")
    check(spec.head, "head")
    for i, s in enumerate(spec.stages):
        check(s, f"stages[{i}]")
