"""Absolute position encodings added to the token grid: none, learned, 2D sin-cos.

Papers: Dosovitskiy et al. 2021 (ViT, learned absolute embeddings); Chen et al. 2021,
"An Empirical Study of Training Self-Supervised Vision Transformers" (MoCo v3, fixed 2D sin-cos).
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from torch import nn

from operators.base import GridPosEncoding
from operators.registry import POS_ENCODINGS


@POS_ENCODINGS.register("none")
class NoPosEncoding(GridPosEncoding):
    """No position information beyond what the mixers and MLPs infer themselves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def resample_pos_table(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A learned ``(1, H, W, C)`` table at another grid ``(h, w)``: ``(1, h, w, C)``.

    timm's ``resample_abs_pos_embed`` (bicubic, corners not aligned, no antialiasing), used both
    in the forward pass and when a checkpoint is loaded at another size, so the two agree.
    """
    _, H, W, C = pos.shape
    if (H, W) == tuple(grid):
        return pos
    out = resample_abs_pos_embed(pos.reshape(1, H * W, C), new_size=list(grid), old_size=[H, W],
                                 num_prefix_tokens=0, antialias=False)
    return out.reshape(1, grid[0], grid[1], C)


@POS_ENCODINGS.register("abs")
class LearnedAbsPosEncoding(GridPosEncoding):
    """A learned ``(H, W, C)`` table added to the tokens; bicubically resized when the grid
    differs from the one it was built for (ViT's fine-tuning-at-higher-resolution recipe)."""

    no_weight_decay_params = ("pos_embed",)

    def __init__(self, dim: int, *, grid_size: tuple[int, int]) -> None:
        super().__init__(dim, grid_size=grid_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, *grid_size, dim))
        trunc_normal_(self.pos_embed, std=0.02)

    def resize_state(self, name: str, tensor: torch.Tensor, source: nn.Module | None) -> torch.Tensor:
        """A checkpoint's ``pos_embed`` of another grid, resampled to this one as ``forward`` would."""
        return resample_pos_table(tensor, self.grid_size) if name == "pos_embed" else tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        pos = resample_pos_table(self.pos_embed, (H, W))  # (1, H, W, C)
        return x + pos.to(x.dtype)


def sincos_2d(H: int, W: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos table ``(H, W, dim)``: a quarter of the channels per (axis, sin|cos)."""
    if dim % 4:
        raise ValueError(f"the 2D sin-cos encoding needs a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    y, x = ys[..., None] * omega, xs[..., None] * omega  # (H, W, dim/4)
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)


@POS_ENCODINGS.register("sincos")
class SinCosPosEncoding(GridPosEncoding):
    """A fixed 2D sin-cos table added to the tokens, computed for whatever grid arrives."""

    def __init__(self, dim: int, *, grid_size: tuple[int, int]) -> None:
        super().__init__(dim, grid_size=grid_size)
        self.register_buffer("table", sincos_2d(*grid_size, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        table = self.table if (H, W) == tuple(self.table.shape[:2]) else sincos_2d(H, W, C).to(x.device)
        return x + table.to(x.dtype)
