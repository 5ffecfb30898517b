"""Cross-shaped window attention.

Paper: Dong et al. 2022, "CSWin Transformer: A General Vision Transformer Backbone with
Cross-Shaped Windows". Half the heads attend inside horizontal stripes of height
``split_size`` spanning the full width, the other half inside vertical stripes of width
``split_size`` spanning the full height; together each token sees a cross. LePE (see
``operators/pos_lepe.py``) is part of the operator and always on. Cost: O(N s (H + W) C)
for N = H W tokens, C channels and stripe width s. Grids the stripe width does not divide
are zero-padded after the q/k/v projection and the padded keys are masked out.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, attend
from operators.pos_lepe import LePE
from operators.registry import MIXERS
from operators.window_attention import window_mask, window_partition, window_reverse


def stripe_attention(qkv: torch.Tensor, stripe: int, num_heads: int, lepe: LePE) -> torch.Tensor:
    """Attention inside horizontal stripes of ``stripe`` rows: ``(B, H, W, 3c) -> (B, H, W, c)``."""
    B, H, W, C3 = qkv.shape
    c = C3 // 3
    s = min(stripe, H)
    pad = (-H) % s
    qkv = F.pad(qkv, (0, 0, 0, 0, 0, pad))  # (B, Hp, W, 3c), padded tokens are zero
    Hp = H + pad
    win = window_partition(qkv, (s, W))  # (B*nS, s*W, 3c)
    n = win.shape[1]
    q, k, v = win.view(-1, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B*nS, h, n, d)
    mask = window_mask(Hp, W, (s, W), (0, 0), (H, W), qkv.device)  # (nS, 1, n, n) or None
    if mask is not None:
        mask = mask.repeat(B, 1, 1, 1)
    out = attend(q, k, v, lepe, (s, W), mask)  # (B*nS, h, n, d), LePE on the stripe
    out = out.transpose(1, 2).reshape(-1, n, c)  # (B*nS, n, c)
    return window_reverse(out, (s, W), Hp, W)[:, :H]  # (B, H, W, c)


@MIXERS.register("cswin")
class CSWinAttention(TokenMixer):
    """Horizontal- and vertical-stripe attention on two halves of the heads, with LePE (CSWin)."""

    supported_pos = frozenset()  # LePE is built in

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        split_size: int = 2,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "split_size": split_size})):
            raise ValueError(f"cswin: {why}")
        self.num_heads, self.split_size = num_heads, split_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        H, W = grid_size
        half = dict(dim=dim // 2, num_heads=num_heads // 2)
        self.lepe_h = LePE(**half, grid_size=(min(split_size, H), W))  # horizontal stripes
        self.lepe_v = LePE(**half, grid_size=(min(split_size, W), H))  # vertical stripes, transposed

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        heads = knobs.get("num_heads", 4)
        if heads < 2 or heads % 2:
            return f"num_heads={heads} must be even (half the heads per stripe direction)"
        s = knobs.get("split_size", 2)
        if s < 1 or s > max(grid_size):
            return f"split_size={s} must be between 1 and the longer feature-map side {max(grid_size)}"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        c = C // 2
        qkv = self.qkv(x).view(B, H, W, 3, C)  # (B, H, W, 3, C)
        qkv_h = qkv[..., :c].reshape(B, H, W, 3 * c)  # first half of the channels/heads
        qkv_v = qkv[..., c:].transpose(1, 2).reshape(B, W, H, 3 * c)  # second half, transposed grid
        heads = self.num_heads // 2
        out_h = stripe_attention(qkv_h, self.split_size, heads, self.lepe_h)  # (B, H, W, c)
        out_v = stripe_attention(qkv_v, self.split_size, heads, self.lepe_v).transpose(1, 2)  # (B, H, W, c)
        return self.proj(torch.cat([out_h, out_v], dim=-1))  # (B, H, W, C)
