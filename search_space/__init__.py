"""The search space: the genome (ArchSpec), presets, and the genome -> model builder."""

from __future__ import annotations

from search_space.genome import ArchSpec, HeadSpec, StageSpec, StemSpec
from search_space.presets import PRESET_TIMM, PRESETS, get_preset


def build_model(spec, **kwargs):
    """``ArchSpec`` (or its dict / JSON) -> ``NasNet``; see ``search_space.builder.build_model``."""
    from search_space.builder import build_model as _build

    return _build(spec, **kwargs)


__all__ = ["ArchSpec", "StemSpec", "StageSpec", "HeadSpec", "PRESETS", "PRESET_TIMM", "get_preset", "build_model"]
