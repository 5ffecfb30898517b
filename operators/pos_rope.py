"""2D rotary position embeddings (RoPE) for attention over a token grid: axial and mixed.

Paper: Heo et al. 2024, "Rotary Position Embedding for Vision Transformer" (RoPE-ViT), after
Su et al. 2021, "RoFormer". Queries and keys are rotated by angles proportional to a token's
(x, y) coordinates, so ``q_i . k_j`` depends only on the offset between tokens i and j.

* ``rope_axial``: half of each head's frequency pairs rotate with x, half with y
  (fixed frequencies ``100^(-t / (d/4))``, the paper's axial setting).
* ``rope_mixed``: every frequency pair rotates by ``x * fx + y * fy`` with per-head learnable
  ``fx, fy`` (initialised as in the paper: magnitudes ``10^(-t / (d/4))`` in random directions
  per head, timm's ``init_random_2d_freqs``), so heads can learn diagonal directions.

Rotations are computed from the coordinates of whatever grid arrives (a window, or a feature
map of another resolution), so nothing is resized. Needs a head width divisible by 4.
"""

from __future__ import annotations

import torch
from timm.layers.pos_embed_sincos import init_random_2d_freqs
from torch import nn

from operators.base import AttnPosEncoding
from operators.registry import POS_ENCODINGS


def grid_coords(grid: tuple[int, int], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened row-major ``(y, x)`` coordinates of an ``h x w`` grid, each ``(h*w,)`` float32."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    return ys.reshape(-1), xs.reshape(-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dim: pairs channel t with channel t + d/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotation(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (..., N, d)`` by ``angles (..., N, d/2)`` (pairs ``(t, t + d/2)``); keeps the dtype."""
    angles = torch.cat([angles, angles], dim=-1)  # (..., N, d)
    out = x.float() * angles.cos() + rotate_half(x.float()) * angles.sin()
    return out.to(x.dtype)


class _Rope2d(AttnPosEncoding):
    """Shared body: subclasses return the rotation angles ``(heads or 1, N, d/2)`` for a grid."""

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        self.head_dim = dim // num_heads
        if (why := self.check(dim, num_heads)) is not None:
            raise ValueError(why)

    @classmethod
    def check(cls, dim: int, num_heads: int) -> str | None:
        head_dim = dim // max(num_heads, 1)
        if head_dim % 4:
            return (f"2D RoPE needs a head width (dim / num_heads) divisible by 4, got {dim} / {num_heads} = "
                    f"{head_dim}; change num_heads or the stage width")
        return None

    def angles(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def rotate(self, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        ang = self.angles(tuple(grid), q.device)  # (heads or 1, N, d/2)
        return apply_rotation(q, ang), apply_rotation(k, ang)  # (B, heads, N, d) each


@POS_ENCODINGS.register("rope_axial")
class AxialRope(_Rope2d):
    """RoPE-Axial (Heo et al. 2024): the first half of the frequency pairs follow x, the second y."""

    theta = 100.0

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        quarter = self.head_dim // 4
        freqs = 1.0 / self.theta ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # (d/4,)
        self.register_buffer("freqs", freqs, persistent=False)
        self.register_buffer("cached", self._angles(self.grid_size, freqs), persistent=False)

    @staticmethod
    def _angles(grid: tuple[int, int], freqs: torch.Tensor) -> torch.Tensor:
        ys, xs = grid_coords(grid, freqs.device)
        return torch.cat([xs[:, None] * freqs, ys[:, None] * freqs], dim=-1)[None]  # (1, N, d/2)

    def angles(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        return self.cached if grid == self.grid_size else self._angles(grid, self.freqs)


@POS_ENCODINGS.register("rope_mixed")
class MixedRope(_Rope2d):
    """RoPE-Mixed (Heo et al. 2024): per-head learnable frequencies ``fx, fy`` for every pair."""

    theta = 10.0
    no_weight_decay_params = ("freqs",)

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        init = init_random_2d_freqs(self.head_dim, 1, num_heads, temperature=self.theta)[:, 0]  # (2, heads, d/2)
        self.freqs = nn.Parameter(init)

    def angles(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        ys, xs = grid_coords(grid, device)  # (N,) each
        fx, fy = self.freqs.float().unbind(0)  # (heads, d/2) each
        return xs[None, :, None] * fx[:, None] + ys[None, :, None] * fy[:, None]  # (heads, N, d/2)
