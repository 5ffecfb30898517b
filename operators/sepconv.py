"""Inverted separable convolution as a token mixer.

Paper: Yu et al. 2023, "MetaFormer Baselines for Vision" (ConvFormer), after MobileNetV2's
inverted separable conv. Cost: O(N C k^2) for kernel k.
"""

from __future__ import annotations

import torch
from timm.models.metaformer import StarReLU
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("sepconv")
class SepConv(TokenMixer):
    """pointwise expand -> StarReLU -> depthwise k x k -> pointwise project (ConvFormer)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        expansion_ratio: float = 2.0,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        mid = int(expansion_ratio * dim)
        self.pwconv1 = nn.Linear(dim, mid, bias=False)
        self.act = StarReLU()
        self.dwconv = nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, groups=mid, bias=False)
        self.pwconv2 = nn.Linear(mid, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.pwconv1(x))  # (B, H, W, mid)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, mid)
        return self.pwconv2(x)  # (B, H, W, C)
