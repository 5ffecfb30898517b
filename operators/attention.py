"""Global multi-head self-attention.

Paper: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale" (ViT). Cost: O(N^2 C) for N tokens and C channels.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.base import TokenMixer, attend, make_attn_pos, merge_heads
from operators.registry import MIXERS

# Attention-internal encodings the softmax-attention mixers accept (extended as the zoo grows).
ATTN_POS = frozenset({"rel_bias", "rope_axial", "rope_mixed", "levit_bias", "irpe", "lepe", "log_cpb"})


@MIXERS.register("attention")
class GlobalAttention(TokenMixer):
    """Every token attends to every token (ViT, DeiT), through the fused SDPA kernel."""

    supported_pos = ATTN_POS

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=grid_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, d)
        out = attend(q, k, v, self.pos, (H, W))  # (B, heads, N, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)
