"""Local multi-head relation aggregation (UniFormer's local MHRA).

Paper: Li et al. 2022, "UniFormer: Unifying Convolution and Self-attention for Visual
Recognition". In the shallow stages UniFormer replaces the content-dependent affinity of
attention by a learned local one, ``A(x_i, x_j) = a^{i-j}`` for ``j`` in a k x k neighbourhood,
one affinity per channel (each head's channels share nothing, so heads reduce to channel
groups): value projection (1x1) -> depthwise k x k convolution (the affinity) -> output
projection (1x1). The deep stages' global MHRA is plain global attention (``attention``).
Cost O(N C^2 * 2 + N k^2 C). The block's norm replaces UniFormer's BatchNorm and the dynamic
position embedding (a depthwise 3x3 conv) is the ``cpe`` grid encoding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("uniformer_local")
class LocalRelationAggregator(TokenMixer):
    """UniFormer local MHRA: 1x1 -> depthwise k x k (learned local affinity) -> 1x1.

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
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"kernel_size": kernel_size})):
            raise ValueError(f"uniformer_local: {why}")
        self.v = nn.Linear(dim, dim)
        self.affinity = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k = knobs.get("kernel_size", 5)
        if k < 1 or k % 2 == 0:
            return f"kernel_size={k} must be a positive odd number"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v(x).permute(0, 3, 1, 2)  # (B, C, H, W)
        return self.proj(self.affinity(v).permute(0, 2, 3, 1))  # (B, H, W, C)
