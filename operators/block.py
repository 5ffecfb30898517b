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

from operators.registry import CHANNEL_ATTNS, CHANNEL_MLPS, MIXERS


class UnifiedBlock(nn.Module):
    """``x + drop_path(ls(mixer(norm(x))))`` then ``x + drop_path(ls(mlp(norm(x))))``.

    Channels-last ``(B, H, W, C)``. ``layer_scale`` is LayerScale's init value (None: off).
    ``channel_attn`` names an optional channel-attention module applied after the mixer.
    """

    def __init__(
        self,
        dim: int,
        *,
        mixer: str,
        mixer_knobs: dict[str, Any] | None = None,
        grid_size: tuple[int, int],
        pos_encoding: str = "none",
        block_index: int = 0,
        mlp: str = "mlp",
        mlp_ratio: float = 4.0,
        layer_scale: float | None = None,
        channel_attn: str = "none",
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.mixer = MIXERS.get(mixer)(
            dim, grid_size=grid_size, pos_encoding=pos_encoding, block_index=block_index, **(mixer_knobs or {})
        )
        self.channel_attn = nn.Identity() if channel_attn == "none" else CHANNEL_ATTNS.get(channel_attn)(dim)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = CHANNEL_MLPS.get(mlp)(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.channel_attn(self.mixer(self.norm1(x)))))  # (B, H, W, C)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))  # (B, H, W, C)
        return x
