"""Large-kernel attention: a decomposed large depthwise convolution used as an attention map.

Paper: Guo et al. 2023, "Visual Attention Network" (VAN). A K x K convolution with dilation d
is decomposed into a (2d-1) x (2d-1) depthwise conv, a ceil(K/d) x ceil(K/d) depthwise conv
with dilation d and a 1 x 1 conv; the result multiplies the input elementwise. As in VAN's
spatial-attention unit the LKA sits between 1 x 1 projections with a GELU and an inner
shortcut. Cost: O(N C^2 + N C (k_1^2 + k_2^2)) for N tokens and C channels: linear in N.
timm has no VAN, so it is implemented here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("lka")
class LargeKernelAttention(TokenMixer):
    """VAN's spatial attention: ``proj2(LKA(gelu(proj1(x)))) (+ x)`` with LKA(u) = u * conv(u)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        kernel_size: int = 21,
        dilation: int = 3,
        attn_shortcut: bool = True,
    ) -> None:
        super().__init__()
        k0, k1 = 2 * dilation - 1, math.ceil(kernel_size / dilation)
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.conv0 = nn.Conv2d(dim, dim, k0, padding=k0 // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, k1, padding=(k1 // 2) * dilation, dilation=dilation, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.proj_2 = nn.Conv2d(dim, dim, 1)
        self.attn_shortcut = attn_shortcut

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, d = knobs.get("kernel_size", 21), knobs.get("dilation", 3)
        if d < 1 or k < 2 * d - 1:
            return f"dilation={d} must be at least 1 and kernel_size={k} at least 2 * dilation - 1"
        if math.ceil(k / d) % 2 == 0:
            return (f"kernel_size={k} / dilation={d} rounds up to an even kernel {math.ceil(k / d)}; "
                    "pick an odd ceil(kernel_size / dilation) (VAN: 21 / 3 = 7)")
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        u = self.act(self.proj_1(xc))
        attn = self.conv1(self.conv_spatial(self.conv0(u)))  # the decomposed K x K dilated kernel
        y = self.proj_2(u * attn)
        if self.attn_shortcut:
            y = y + xc
        return y.permute(0, 2, 3, 1)  # (B, H, W, C)
