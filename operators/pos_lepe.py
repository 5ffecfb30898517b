"""Locally-enhanced position encoding (LePE).

Paper: Dong et al. 2022, "CSWin Transformer: A General Vision Transformer Backbone with
Cross-Shaped Windows". A depthwise 3x3 conv of the values, computed on the attended region
(a window, a stripe or the whole map), is added to the attention output; it works at any
resolution and costs O(9 N C) for N tokens and C channels.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.base import AttnPosEncoding
from operators.registry import POS_ENCODINGS


@POS_ENCODINGS.register("lepe")
class LePE(AttnPosEncoding):
    """``out + dwconv3x3(V)`` with one 3x3 filter per head-channel (CSWin's LePE)."""

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def refine(self, out: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        Bw, heads, N, d = v.shape  # (B', heads, N, d) with N = h * w
        h, w = grid
        if h * w != N:
            raise ValueError(f"LePE: the attended region {h}x{w} does not hold the {N} value tokens")
        img = v.transpose(2, 3).reshape(Bw, heads * d, h, w)  # (B', heads*d, h, w), channel = head*d + j
        lepe = self.conv(img).view(Bw, heads, d, N).transpose(2, 3)  # (B', heads, N, d)
        return out + lepe
