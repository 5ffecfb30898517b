"""Average pooling as a token mixer.

Paper: Yu et al. 2022, "MetaFormer is Actually What You Need for Vision" (PoolFormer).
Cost: O(N C k^2), no parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("pool")
class Pooling(TokenMixer):
    """``avgpool(x) - x`` with a stride-1 k x k window (PoolFormer)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        pool_size: int = 3,
    ) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
        return y - x
