"""Conditional position encoding: a position-encoding generator (PEG).

Paper: Chu et al. 2023, "Conditional Positional Encodings for Vision Transformers" (CPVT).
A depthwise 3x3 conv whose zero padding lets tokens infer their place; works at any resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.base import GridPosEncoding
from operators.registry import POS_ENCODINGS


@POS_ENCODINGS.register("cpe")
class ConditionalPosEncoding(GridPosEncoding):
    """``x + dwconv3x3(x)`` applied where the stage starts (CPVT's PEG)."""

    def __init__(self, dim: int, *, grid_size: tuple[int, int]) -> None:
        super().__init__(dim, grid_size=grid_size)
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
