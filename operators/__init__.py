"""Operators: token mixers, position encodings, stems, downsamplers, channel MLPs, the block.

Each family lives in its own module and registers its classes by name in exactly one
registry per kind; importing this package fills the registries.
"""

from __future__ import annotations

from operators import (  # noqa: F401  (imported to register)
    additive,
    attention,
    axial,
    channel_attention,
    cswin,
    cvt,
    downsample,
    focal,
    halo,
    identity,
    lambda_layer,
    linformer,
    lka,
    longformer,
    lsh,
    maxvit,
    mlp,
    neighborhood,
    outlook,
    performer,
    pooling,
    pos_absolute,
    pos_conditional,
    pos_irpe,
    pos_lepe,
    pos_levit,
    pos_relative,
    pos_rope,
    relu_linear,
    separable,
    sepconv,
    shift,
    shuffle_window,
    spatial_reduction,
    stem_t2t,
    stems,
    talking_heads,
    twins,
    window_attention,
    xcit,
)
from operators.base import AttnPosEncoding, GridPosEncoding, Knob, TokenMixer, attend
from operators.block import UnifiedBlock
from operators.registry import (
    CHANNEL_ATTNS,
    CHANNEL_MLPS,
    DOWNSAMPLERS,
    MIXERS,
    POS_ENCODINGS,
    STEMS,
    Registry,
)

__all__ = [
    "MIXERS", "POS_ENCODINGS", "STEMS", "DOWNSAMPLERS", "CHANNEL_MLPS", "CHANNEL_ATTNS",
    "Registry", "TokenMixer", "GridPosEncoding", "AttnPosEncoding", "Knob", "UnifiedBlock", "attend",
]
