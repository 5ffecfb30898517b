"""Shift: move a few channel groups one step in each of the four directions.

Paper: Wang et al. 2022, "When Shift Operation Meets Vision Transformer: An Extremely Simple
Alternative to Attention Mechanism" (ShiftViT). Four groups of ``C // n_div`` channels move
``step`` tokens left, right, up and down (zero-filled at the border); the other channels stay.
No parameters and no multiplications: cost O(N C) memory traffic for N tokens and C channels.
Inside the pre-norm block this gives ``x + shift(norm(x))``.
"""

from __future__ import annotations

from typing import Any

import torch

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("shift")
class Shift(TokenMixer):
    """Zero-parameter partial channel shift in four directions (ShiftViT)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        n_div: int = 12,
        step: int = 1,
    ) -> None:
        super().__init__()
        self.group = dim // n_div
        self.step = step

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        n_div, step = knobs.get("n_div", 12), knobs.get("step", 1)
        if n_div < 4 or dim // n_div < 1:
            return f"n_div={n_div} must be at least 4 and at most the width {dim} (4 groups of dim // n_div channels)"
        if step < 1:  # a step past the map side is allowed: those groups shift out to zeros
            return f"step={step} must be at least 1"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, s = self.group, self.step
        out = torch.zeros_like(x)  # (B, H, W, C)
        out[:, :, :-s, 0 * g:1 * g] = x[:, :, s:, 0 * g:1 * g]  # shift left
        out[:, :, s:, 1 * g:2 * g] = x[:, :, :-s, 1 * g:2 * g]  # shift right
        out[:, :-s, :, 2 * g:3 * g] = x[:, s:, :, 2 * g:3 * g]  # shift up
        out[:, s:, :, 3 * g:4 * g] = x[:, :-s, :, 3 * g:4 * g]  # shift down
        out[..., 4 * g:] = x[..., 4 * g:]  # the rest stay in place
        return out
