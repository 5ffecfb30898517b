"""The search space: the genome (ArchSpec), presets, and the genome -> model builder.

Importing this package (or any package above it: ``evaluators``, ``nas``) makes the project's timm
names (``attnnas``, ``attnnas_<preset>``) available to ``timm.create_model`` without importing
timm itself: they are registered right after timm is imported (``search_space._timm_names``).
"""

from __future__ import annotations

from search_space import _timm_names
from search_space.genome import ArchSpec, HeadSpec, StageSpec, StemSpec
from search_space.presets import PRESET_TIMM, PRESETS, get_preset

_timm_names.install()


def build_model(spec, **kwargs):
    """``ArchSpec`` (or its dict / JSON) -> ``NasNet``; see ``search_space.builder.build_model``."""
    from search_space.builder import build_model as _build

    return _build(spec, **kwargs)


__all__ = ["ArchSpec", "StemSpec", "StageSpec", "HeadSpec", "PRESETS", "PRESET_TIMM", "get_preset", "build_model"]
