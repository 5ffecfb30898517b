"""Downsamplers between stages: ``(B, H, W, C_in) -> (B, H/2, W/2, C_out)``.

Papers: Liu et al. 2021 (Swin patch merging); Wang et al. 2022 (PVTv2 strided conv);
Heo et al. 2021, "Rethinking Spatial Dimensions of Vision Transformers" (PiT pooling).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from operators.registry import DOWNSAMPLERS


class Downsample(nn.Module):
    stride: ClassVar[int] = 2
    registry_name: ClassVar[str] = ""


@DOWNSAMPLERS.register("none")
class NoDownsample(Downsample):
    """Keeps the grid; a linear map when the width changes (isotropic stages)."""

    stride = 1

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@DOWNSAMPLERS.register("patch_merging")
class PatchMerging(Downsample):
    """Concatenate each 2x2 neighbourhood, LayerNorm, project 4C -> C_out (Swin)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_dim)
        self.reduction = nn.Linear(4 * in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = x.reshape(B, x.shape[1] // 2, 2, x.shape[2] // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, C_out)


@DOWNSAMPLERS.register("conv")
class ConvDownsample(Downsample):
    """A 3x3 stride-2 conv followed by LayerNorm (PVTv2's overlapping patch embedding)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))  # (B, H/2, W/2, C_out)


@DOWNSAMPLERS.register("pool")
class PoolDownsample(Downsample):
    """Depthwise 3x3 stride-2 conv that widens the channels in groups (PiT's pooling layer)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        groups = in_dim if out_dim % in_dim == 0 else 1
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H/2, W/2, C_out)
