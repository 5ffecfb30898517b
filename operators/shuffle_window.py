"""Shuffle-window attention: regular windows alternating with spatially shuffled ones.

Paper: Huang et al. 2021, "Shuffle Transformer: Rethinking Spatial Shuffle for Vision
Transformer". Even blocks of a stage attend inside ordinary w x w windows; odd blocks first
shuffle the map so that each window gathers tokens ``H/w`` apart (strided windows, the same
layout as MaxViT's grid partition), which connects windows across the whole map. Cost:
O(N w^2 C) for N tokens, C channels and window side w. Grids the window does not divide are
padded and the padded keys masked (shared with ``operators.maxvit``).
"""

from __future__ import annotations

from typing import Any

import torch

from operators.maxvit import PartitionAttention
from operators.registry import MIXERS


@MIXERS.register("shuffle_window")
class ShuffleWindowAttention(PartitionAttention):
    """Window attention on even blocks, shuffled (strided) window attention on odd blocks."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        window_size: int = 7,
        shuffle: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, grid_size=grid_size, pos_encoding=pos_encoding, num_heads=num_heads,
                         partition_size=window_size, qkv_bias=qkv_bias)
        self.mode = "grid" if shuffle and block_index % 2 == 1 else "block"

    @classmethod
    def canonical_knobs(cls, knobs: dict[str, Any], *, depth: int) -> dict[str, Any]:
        """Only odd blocks shuffle, so ``shuffle`` cannot matter in a one-block stage."""
        if depth == 1 and "shuffle" in knobs and "shuffle" in cls.knobs():
            knobs = {**knobs, "shuffle": cls.knobs()["shuffle"].default}
        return knobs

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        why = cls.check_partition("window_size", knobs.get("window_size", 7), grid_size)
        return why or super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend_partitioned(x, self.mode)  # (B, H, W, C)
