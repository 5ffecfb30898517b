"""Convolutional channel MLPs: CeiT's locally-enhanced feed-forward and CMT's inverted residual FFN.

Papers: Yuan et al. 2021, "Incorporating Convolution Designs into Visual Transformers" (CeiT,
LeFF); Guo et al. 2022, "CMT: Convolutional Neural Networks Meet Vision Transformers" (IRFFN).
Built as ``Mlp(dim, hidden)``; ``(B, H, W, C) -> (B, H, W, C)``. Both use BatchNorm as the
papers do (training needs more than one value per channel). Not in timm.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.registry import CHANNEL_MLPS


class _ChannelsLastBN(nn.BatchNorm2d):
    """BatchNorm over the channels of a ``(B, H, W, C)`` grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@CHANNEL_MLPS.register("leff")
class LocallyEnhancedFFN(nn.Module):
    """LeFF (CeiT): linear expand -> BN -> GELU; depthwise ``kernel_size`` conv -> BN -> GELU;
    linear project -> BN -> GELU. Cost O(N C hidden + N hidden k^2)."""

    def __init__(self, dim: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Linear(dim, hidden), _ChannelsLastBN(hidden), nn.GELU())
        self.dwconv = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden),
            nn.BatchNorm2d(hidden), nn.GELU())
        self.project = nn.Sequential(nn.Linear(hidden, dim), _ChannelsLastBN(dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)  # (B, H, W, hidden)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, hidden)
        return self.project(x)  # (B, H, W, C)


@CHANNEL_MLPS.register("irffn")
class InvertedResidualFFN(nn.Module):
    """IRFFN (CMT): 1x1 expand -> GELU -> BN; ``x + (depthwise 3x3 -> GELU -> BN)(x)``;
    1x1 project -> BN. Cost O(N C hidden + 9 N hidden)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), _ChannelsLastBN(hidden))
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU(),
                                    nn.BatchNorm2d(hidden))
        self.project = nn.Sequential(nn.Linear(hidden, dim), _ChannelsLastBN(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)  # (B, H, W, hidden)
        x = x + self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, hidden)
        return self.project(x)  # (B, H, W, C)
