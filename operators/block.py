"""The unified block every stage is made of.

Papers: Yu et al. 2022, "MetaFormer is Actually What You Need for Vision"; Hu et al. 2023,
"Demystify Transformers & Convolutions in Modern Image Deep Networks" (STM-Evaluation), which
compares token mixers inside one such block.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import DropPath, LayerScale
from torch import nn

from operators.mlp import MlpFFN


class UnifiedBlock(nn.Module):
    """``x + drop_path(ls(mixer(norm(x))))`` then ``x + drop_path(ls(mlp(norm(x))))``.

    Channels-last ``(B, H, W, C)``. The block is given operator classes, not names (as timm's
    ``MetaFormerBlock`` is given its ``token_mixer``); the builder resolves a genome's names in the
    registries. ``layer_scale`` is LayerScale's init value (None: off).

    Args:
        dim: channels C.
        token_mixer: a token-mixer class, built as ``token_mixer(dim, grid_size=..., pos_encoding=...,
            block_index=..., **mixer_knobs)``.
        pos_encoding: the attention-internal position encoding's name, passed to the mixer.
        mlp_layer: a channel-MLP class, built as ``mlp_layer(dim, int(dim * mlp_ratio))``.
        channel_attn_layer: an optional channel-attention class applied after the mixer, built
            as ``channel_attn_layer(dim)`` (None: none).
    """

    def __init__(
        self,
        dim: int,
        *,
        token_mixer: type[nn.Module],
        mixer_knobs: dict[str, Any] | None = None,
        grid_size: tuple[int, int],
        pos_encoding: str = "none",
        block_index: int = 0,
        mlp_layer: type[nn.Module] = MlpFFN,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = None,
        channel_attn_layer: type[nn.Module] | None = None,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.mixer = token_mixer(
            dim, grid_size=grid_size, pos_encoding=pos_encoding, block_index=block_index, **(mixer_knobs or {})
        )
        self.channel_attn = nn.Identity() if channel_attn_layer is None else channel_attn_layer(dim)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.channel_attn(self.mixer(self.norm1(x)))))  # (B, H, W, C)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))  # (B, H, W, C)
        return x
