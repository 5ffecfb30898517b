"""Pale-shaped self-attention (Pale Transformer).

Paper: Wu et al. 2022, "Pale Transformer: A General Vision Transformer Backbone with
Pale-Shaped Attention". A pale is a set of ``pale_size`` interlaced rows (rows ``g, g + G,
g + 2G, ...`` with ``G = ceil(H / pale_size)``) and as many interlaced columns. The channels
(and heads) are split in two: the first half attends within its token's interlaced row group,
the second within its interlaced column group; the halves are concatenated and projected. Each
token thus reaches ``pale_size (H + W)`` tokens spread over the whole map. Cost
O(N s (H + W) C / 2 + 4 N C^2) for pale size s. Unlike CSWin's contiguous stripes the rows are
dilated. Grids ``pale_size`` does not divide are zero-padded after the q/k/v projection and the
padded keys masked. With ``pale_size`` equal to the grid side every group is the whole map (a
test checks the result is global attention). Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, attend, merge_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF


def interlaced_row_attention(qkv: torch.Tensor, pale: int, num_heads: int) -> torch.Tensor:
    """Attention within groups of ``pale`` interlaced rows: ``(B, H, W, 3c) -> (B, H, W, c)``."""
    B, H, W, C3 = qkv.shape
    c = C3 // 3
    s = min(pale, H)
    G = -(-H // s)  # groups; row r belongs to group r % G
    Hp = s * G
    qkv = F.pad(qkv, (0, 0, 0, 0, 0, Hp - H))  # (B, Hp, W, 3c)
    groups = qkv.view(B, s, G, W, C3).transpose(1, 2).reshape(B * G, s * W, C3)  # (B*G, n, 3c)
    n = s * W
    q, k, v = groups.view(B * G, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    mask = None
    if Hp != H:  # padded rows are the last ones: row index i * G + g >= H
        rows = torch.arange(Hp, device=qkv.device).view(s, G).T  # (G, s) row index per group slot
        pad = (rows >= H)[:, :, None].expand(G, s, W).reshape(G, 1, 1, n)
        mask = torch.zeros(pad.shape, device=qkv.device).masked_fill(pad, NEG_INF).repeat(B, 1, 1, 1)
    out = merge_heads(attend(q, k, v, mask=mask))  # (B*G, n, c)
    out = out.view(B, G, s, W, c).transpose(1, 2).reshape(B, Hp, W, c)
    return out[:, :H]  # (B, H, W, c)


@MIXERS.register("pale")
class PaleAttention(TokenMixer):
    """Pale-shaped attention: interlaced-row attention on half the heads, interlaced-column on the other.

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
        num_heads: int = 4,
        pale_size: int = 7,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "pale_size": pale_size})):
            raise ValueError(f"pale: {why}")
        self.num_heads, self.pale_size = num_heads, pale_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        heads, s = knobs.get("num_heads", 4), knobs.get("pale_size", 7)
        if heads < 2 or heads % 2:
            return f"num_heads={heads} must be even (half the heads per direction)"
        if s < 1:
            return f"pale_size={s} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        c, heads = C // 2, self.num_heads // 2
        qkv = self.qkv(x).view(B, H, W, 3, C)
        rows = qkv[..., :c].reshape(B, H, W, 3 * c)  # first half of each of q, k, v
        cols = qkv[..., c:].transpose(1, 2).reshape(B, W, H, 3 * c)  # second half, transposed grid
        out_r = interlaced_row_attention(rows, self.pale_size, heads)  # (B, H, W, c)
        out_c = interlaced_row_attention(cols, self.pale_size, heads).transpose(1, 2)  # (B, H, W, c)
        return self.proj(torch.cat([out_r, out_c], dim=-1))  # (B, H, W, C)
