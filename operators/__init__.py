"""Operators: token mixers, position encodings, stems, downsamplers, channel MLPs, the block.

Each family lives in its own module and registers its classes by name in exactly one
registry per kind. ``import operators`` is cheap (no torch): the families are imported by the
first registry lookup (``MIXERS["window"]``, ``"window" in MIXERS``, ``list(MIXERS)``), and the
base classes and the block (``operators.TokenMixer``, ``operators.UnifiedBlock``, ...) on first use.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from operators.registry import (
    CHANNEL_ATTNS,
    CHANNEL_MLPS,
    DOWNSAMPLERS,
    MIXERS,
    POS_ENCODINGS,
    STEMS,
    Registry,
    set_loader,
)

# every module that registers operators; a new family adds a line here
FAMILIES = (
    "additive", "attention", "axial", "channel_attention", "cswin", "cvt", "downsample", "focal", "halo",
    "identity", "lambda_layer", "linformer", "lka", "longformer", "lsh", "maxvit", "mlp", "neighborhood",
    "outlook", "performer", "pooling", "pos_absolute", "pos_conditional", "pos_irpe", "pos_lepe", "pos_levit",
    "pos_relative", "pos_rope", "relu_linear", "separable", "sepconv", "shift", "shuffle_window",
    "spatial_reduction", "stem_t2t", "stems", "talking_heads", "twins", "window_attention", "xcit",
)
_LOAD_LOCK = threading.RLock()
_loaded = False


def load_families() -> None:
    """Import every operator family once (filling the registries); safe from any thread."""
    global _loaded
    if _loaded:
        return
    with _LOAD_LOCK:  # re-entrant: a family that looks a name up while loading gets what is there
        if _loaded:
            return
        for name in FAMILIES:
            importlib.import_module(f"operators.{name}")
        _loaded = True


set_loader(load_families)

# name -> module for the classes and functions resolved on first use (they import torch)
_LAZY: dict[str, str] = {
    "AttnPosEncoding": "operators.base", "GridPosEncoding": "operators.base", "Knob": "operators.base",
    "TokenMixer": "operators.base", "attend": "operators.base", "UnifiedBlock": "operators.block",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in FAMILIES:  # ``operators.attention`` and friends, as before
        load_families()
        return importlib.import_module(f"operators.{name}")
    raise AttributeError(f"module 'operators' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *FAMILIES})


__all__ = [
    "MIXERS", "POS_ENCODINGS", "STEMS", "DOWNSAMPLERS", "CHANNEL_MLPS", "CHANNEL_ATTNS",
    "Registry", "TokenMixer", "GridPosEncoding", "AttnPosEncoding", "Knob", "UnifiedBlock", "attend",
]
