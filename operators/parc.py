"""Position-aware circular convolution (ParC).

Paper: Zhang et al. 2022, "ParC-Net: Position Aware Circular Convolution with Merits from
ConvNets and Transformer". Half the channels go through ParC-H, a depthwise convolution along
the height whose kernel is as tall as the feature map, applied circularly (the map is wrapped
around, so every output sees the whole column); the other half through ParC-W along the width.
A learned position embedding (one per channel and row / column) is added before each
convolution, since a circular convolution alone is translation-equivariant. Kernels and
embeddings are sized from ``grid_size``; on another grid they are linearly interpolated to
it, as in the paper. Cost O(N (H + W) C / 2) for N = H W tokens and C channels. Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


def circular_conv_h(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise circular convolution along the height, ``out[i] = sum_k w[k] x[(i + k) mod H]``.

    ``x (B, c, H, W)``, ``weight (c, 1, H, 1)``, ``bias (c,)`` -> ``(B, c, H, W)``."""
    H = x.shape[2]
    x = F.pad(x, (0, 0, 0, H - 1), mode="circular")  # (B, c, 2H - 1, W)
    return F.conv2d(x, weight, bias, groups=x.shape[1])


def _fit(t: torch.Tensor, size: int) -> torch.Tensor:
    """Linearly interpolate ``t (c, 1, L, 1)`` along L to ``size``."""
    if t.shape[2] == size:
        return t
    return F.interpolate(t, size=(size, 1), mode="bilinear", align_corners=True)


@MIXERS.register("parc")
class ParCMixer(TokenMixer):
    """ParC: global circular depthwise convolutions along H (half the channels) and W (the
    other half), each after a learned position embedding; then a 1x1 projection.

    ``(B, H, W, C) -> (B, H, W, C)``. Raises ``ValueError`` (one line) when ``check`` rejects the knobs.
    """

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        position_embedding: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {})):
            raise ValueError(f"parc: {why}")
        c = dim // 2
        H, W = grid_size
        self.split = (c, dim - c)
        self.weight_h = nn.Parameter(torch.randn(c, 1, H, 1) * H ** -0.5)
        self.weight_w = nn.Parameter(torch.randn(dim - c, 1, W, 1) * W ** -0.5)  # stored as a column
        self.bias_h, self.bias_w = nn.Parameter(torch.zeros(c)), nn.Parameter(torch.zeros(dim - c))
        self.pe_h = nn.Parameter(torch.randn(c, 1, H, 1) * 0.02) if position_embedding else None
        self.pe_w = nn.Parameter(torch.randn(dim - c, 1, W, 1) * 0.02) if position_embedding else None
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        if dim < 2:
            return f"the width {dim} must be at least 2 (half the channels per axis)"
        return super().check(dim, grid_size, knobs)

    def resize_state(self, name: str, tensor: torch.Tensor, source: nn.Module | None) -> torch.Tensor:
        """A checkpoint's kernel or position embedding of another grid, interpolated to this one
        as ``forward`` would (so a model loaded at another size equals the saved one run there)."""
        if name in ("weight_h", "pe_h"):
            return _fit(tensor, self.weight_h.shape[2])
        if name in ("weight_w", "pe_w"):
            return _fit(tensor, self.weight_w.shape[2])
        return tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        xh, xw = x.permute(0, 3, 1, 2).split(self.split, dim=1)  # (B, c, H, W), (B, C - c, H, W)
        if self.pe_h is not None:
            xh = xh + _fit(self.pe_h, H)[:, 0]  # + (c, H, 1)
            xw = xw + _fit(self.pe_w, W)[:, 0].transpose(1, 2)  # + (C - c, 1, W)
        yh = circular_conv_h(xh, _fit(self.weight_h, H), self.bias_h)  # (B, c, H, W)
        yw = circular_conv_h(xw.transpose(2, 3), _fit(self.weight_w, W), self.bias_w).transpose(2, 3)
        return self.proj(torch.cat([yh, yw], dim=1).permute(0, 2, 3, 1))  # (B, H, W, C)
