"""Genome validation: every rule raises a ``ValueError`` that names the field and what is allowed.

It sits below ``search_space.genome`` (which calls it from ``ArchSpec.validate``) and reads the
genome only through its attributes, so the two modules do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from operators.errors import did_you_mean

if TYPE_CHECKING:
    from search_space.genome import ArchSpec

MAX_STAGES = 4
HEAD_POOLS = ("avg", "cls")
ImgSize = int | tuple[int, int]


def img_size_value(size: Any) -> Any:
    """An image size as the genome stores it: ``int`` for a square, ``(H, W)`` otherwise
    (``[32, 48]`` -> ``(32, 48)``, ``(32, 32)`` -> ``32``). Anything else is returned as is,
    for the type check to report."""
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in size):
        return size[0] if size[0] == size[1] else (size[0], size[1])
    return size


def img_hw(size: ImgSize) -> tuple[int, int]:
    """``(H, W)`` of an image size given as ``N`` (a square) or ``(H, W)``.

    Raises:
        ValueError: anything else (e.g. three sides, a string).
    """
    size = img_size_value(size)
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return size
    raise ValueError(f"an image size is N (a square) or (H, W), got {size!r}")


def validate(spec: ArchSpec) -> None:
    """Check every rule on ``spec``; raises ``ValueError`` naming the field and the allowed values."""
    from operators.base import Knob
    from operators.registry import (
        CHANNEL_ATTNS,
        CHANNEL_MLPS,
        DOWNSAMPLERS,
        MIXERS,
        POS_ENCODINGS,
        STEMS,
    )

    for name in ("num_classes", "in_chans"):
        if getattr(spec, name) <= 0 and not (name == "num_classes" and spec.num_classes == 0):
            raise ValueError(f"genome.{name} must be positive (num_classes may be 0: no classifier), "
                             f"got {getattr(spec, name)}")
    try:
        hw = img_hw(spec.img_size)
    except ValueError:
        raise ValueError(f"genome.img_size must be an int (a square) or [H, W], got {spec.img_size!r}") from None
    if min(hw) <= 0:
        raise ValueError(f"genome.img_size must be positive, got {spec.img_size!r}")
    if spec.stem.kind not in STEMS:
        raise ValueError(f"stem.kind: {STEMS.unknown_message(spec.stem.kind)}")
    stem_cls = STEMS.get(spec.stem.kind)
    _check_knobs(stem_cls.knobs(), spec.stem.knob_dict, f"stem {spec.stem.kind!r}")
    if (why := stem_cls.check(spec.stem.patch_size, spec.stem.knob_dict)) is not None:
        raise ValueError(f"stem: {why}")
    if not 1 <= len(spec.stages) <= MAX_STAGES:
        raise ValueError(f"a genome needs 1 to {MAX_STAGES} stages, got {len(spec.stages)}")
    for i, s in enumerate(spec.stages):
        where = f"stages[{i}]"
        if s.depth <= 0:
            raise ValueError(f"{where}.depth must be positive (a number of blocks), got {s.depth}")
        if s.dim <= 0:
            raise ValueError(f"{where}.dim (the width) must be positive, got {s.dim}")
        for field_name, reg, value in (("mixer", MIXERS, s.mixer), ("pos", POS_ENCODINGS, s.pos),
                                       ("mlp", CHANNEL_MLPS, s.mlp), ("downsample", DOWNSAMPLERS, s.downsample)):
            if value not in reg:
                raise ValueError(f"{where}.{field_name}: {reg.unknown_message(value)}")
        if s.channel_attn != "none" and s.channel_attn not in CHANNEL_ATTNS:
            raise ValueError(f"{where}.channel_attn: {CHANNEL_ATTNS.unknown_message(s.channel_attn)} (or 'none')")
        if i == 0 and s.downsample != "none":
            raise ValueError(f"{where}.downsample must be 'none': the first stage follows the stem directly")
        if s.mlp_ratio <= 0:
            raise ValueError(f"{where}.mlp_ratio must be positive, got {s.mlp_ratio}")
        mixer = MIXERS.get(s.mixer)
        _check_knobs(mixer.knobs(), s.knob_dict, f"{where} mixer {s.mixer!r}")
        pos_cls = POS_ENCODINGS.get(s.pos)
        if pos_cls.placement == "attention" and s.pos not in mixer.supported_pos:
            grid_pos = sorted(n for n, c in POS_ENCODINGS.items() if c.placement == "grid")
            allowed = ", ".join(grid_pos + sorted(mixer.supported_pos))
            raise ValueError(f"{where}.pos: mixer {s.mixer!r} does not support position encoding {s.pos!r}; "
                             f"allowed with it: {allowed}")
        if pos_cls.placement == "attention":
            heads = s.knob_dict.get("num_heads", mixer.knobs().get("num_heads", Knob("", int, 1)).default)
            if heads and (why := pos_cls.check(s.dim, heads)) is not None:
                raise ValueError(f"{where}.pos: {why}")
    if any(side % spec.total_stride for side in hw):
        shown = spec.img_size if isinstance(spec.img_size, int) else f"{hw[0]}x{hw[1]}"
        raise ValueError(f"img_size={shown} is not divisible by the total stride {spec.total_stride} "
                         f"(stem patch {spec.stem.patch_size} x downsamplers); use a multiple of {spec.total_stride}"
                         + ("" if isinstance(spec.img_size, int) else " on each side"))
    for i, (s, grid) in enumerate(zip(spec.stages, spec.stage_grids())):
        if (why := MIXERS.get(s.mixer).check(s.dim, grid, s.knob_dict)) is not None:
            raise ValueError(f"stages[{i}] mixer {s.mixer!r}: {why}")
    if spec.head.pool not in HEAD_POOLS:
        raise ValueError(f"head.pool must be one of {', '.join(HEAD_POOLS)}, got {spec.head.pool!r}")
    if spec.head.mlp_ratio < 0:
        raise ValueError(f"head.mlp_ratio must be >= 0 (0: a linear classifier), got {spec.head.mlp_ratio}")
    if not 0 <= spec.head.drop_rate < 1:
        raise ValueError(f"head.drop_rate must be in [0, 1), got {spec.head.drop_rate}")


def _check_knobs(known: dict[str, Any], given: dict[str, Any], where: str) -> None:
    for name, value in given.items():
        if name not in known:
            hint = did_you_mean(name, known)
            allowed = ", ".join(sorted(known)) or "none"
            raise ValueError(f"{where}: unknown knob {name!r}{hint}; knobs: {allowed}")
        t = known[name].type
        ok = isinstance(value, t) and not (isinstance(value, bool) and t is not bool)
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if t is tuple and isinstance(value, (tuple, list)):
            ok = True
        if not ok:
            raise ValueError(f"{where}: knob {name!r} must be {t.__name__}, got {value!r}")
