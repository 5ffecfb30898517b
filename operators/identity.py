"""Identity token mixer: no spatial mixing at all.

Paper: Yu et al. 2023, "MetaFormer Baselines for Vision" (IdentityFormer), the lower bound
of the MetaFormer family. Cost: zero.
"""

from __future__ import annotations

import torch

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("identity")
class IdentityMixer(TokenMixer):
    """Returns its input; the block reduces to a channel MLP (IdentityFormer)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
    ) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
