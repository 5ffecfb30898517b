"""Halo (blocked local) attention.

Papers: Vaswani et al. 2021, "Scaling Local Self-Attention for Parameter Efficient Visual
Backbones" (HaloNet), after Ramachandran et al. 2019, "Stand-Alone Self-Attention in Vision
Models". Queries are grouped in non-overlapping ``block_size`` blocks; each block attends to
its block grown by ``halo_size`` on every side, with relative position logits. Cost
O(N (b + 2h)^2 C) for N tokens, C channels, block b and halo h.

This wraps ``timm.layers.HaloAttn`` (NCHW; permuted from and to our channels-last layout) and
adds an output projection. timm's module needs the map to be a multiple of the block, so
grids the block does not divide are zero-padded at the bottom/right and cropped back: the
padded positions act as zero keys and values, exactly as the halo's own zero padding at the
map borders does in timm. HaloAttn computes an explicit softmax (not the fused SDPA kernel).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers.halo_attn import HaloAttn
from timm.layers.helpers import make_divisible
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("halo")
class HaloAttention(TokenMixer):
    """HaloNet's blocked local attention with a halo (timm ``HaloAttn``) plus a projection."""

    supported_pos = frozenset()  # relative position logits are built in

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        block_size: int = 4,
        halo_size: int = 2,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "block_size": block_size, "halo_size": halo_size}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"halo: {why}")
        self.block_size = block_size
        self.attn = HaloAttn(dim, dim, num_heads=num_heads, block_size=block_size, halo_size=halo_size,
                             qkv_bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        b, h = knobs.get("block_size", 4), knobs.get("halo_size", 2)
        heads = knobs.get("num_heads", 4)
        if b < 1 or h < 0:
            return f"block_size={b} must be positive and halo_size={h} non-negative"
        if b > max(grid_size):
            return (f"block_size={b} is larger than the {grid_size[0]}x{grid_size[1]} feature map; "
                    f"use at most {max(grid_size)}")
        if heads > 0 and make_divisible(dim, divisor=8) // heads < 1:  # timm's q/k head width
            return f"num_heads={heads} leaves no q/k channels per head at width {dim}"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        b = self.block_size
        x = F.pad(x, (0, 0, 0, (-W) % b, 0, (-H) % b))  # (B, Hp, Wp, C)
        y = self.attn(x.permute(0, 3, 1, 2))  # (B, C, Hp, Wp)
        return self.proj(y.permute(0, 2, 3, 1)[:, :H, :W])  # (B, H, W, C)
