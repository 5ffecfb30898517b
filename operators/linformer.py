"""Linformer attention: keys and values projected to a fixed length along the token axis.

Paper: Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity". Learned
``(proj_len, N)`` matrices E and F compress the N key and value tokens to ``proj_len`` rows
before softmax attention (through the fused SDPA kernel). Cost O(N k C) for N tokens, C
channels and projection length k. The projections are sized for the grid the mixer is built
for (``grid_size``); running it on another grid raises a ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, attend, merge_heads, split_heads
from operators.registry import MIXERS


@MIXERS.register("linformer")
class LinformerAttention(TokenMixer):
    """Softmax attention over keys/values compressed along the token axis to ``proj_len``."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        proj_len: int = 32,
        share_kv: bool = False,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "proj_len": proj_len})):
            raise ValueError(f"linformer: {why}")
        self.num_heads = num_heads
        self.grid_size = tuple(grid_size)
        n = grid_size[0] * grid_size[1]
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_k = nn.Linear(n, proj_len, bias=False)  # E: (proj_len, N)
        self.proj_v = self.proj_k if share_kv else nn.Linear(n, proj_len, bias=False)  # F

    def resize_state(self, name: str, tensor: torch.Tensor, source: nn.Module | None) -> torch.Tensor:
        """Token-count projections cannot be resampled: a checkpoint for another grid is refused."""
        h0, w0 = source.grid_size if source is not None else ("?", "?")
        h, w = self.grid_size
        raise ValueError(f"linformer: the checkpoint's token projection {name} is built for {h0}x{w0} tokens and "
                         f"cannot be resampled to {h}x{w}; load it at the checkpoint's img_size")

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, n = knobs.get("proj_len", 32), grid_size[0] * grid_size[1]
        if k < 1 or k > n:
            return (f"proj_len={k} must be between 1 and the {grid_size[0]}x{grid_size[1]} = {n} "
                    f"tokens of the feature map it is built for")
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if (H, W) != self.grid_size:
            h0, w0 = self.grid_size
            raise ValueError(f"linformer: built for {h0}x{w0} = {h0 * w0} tokens, got {H}x{W}; its "
                             f"token projections have a fixed length, so build it for this grid")
        q, k, v = self.qkv(x).view(B, H * W, 3 * C).chunk(3, dim=-1)  # 3 x (B, N, C)
        k = self.proj_k(k.transpose(1, 2)).transpose(1, 2)  # (B, proj_len, C)
        v = self.proj_v(v.transpose(1, 2)).transpose(1, 2)  # (B, proj_len, C)
        h = self.num_heads
        out = attend(split_heads(q, h), split_heads(k, h), split_heads(v, h))  # (B, h, N, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)
