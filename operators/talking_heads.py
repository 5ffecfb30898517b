"""Talking-heads attention: learned mixing across heads before and after the softmax.

Papers: Shazeer et al. 2020, "Talking-Heads Attention"; used in CaiT, Touvron et al. 2021,
"Going deeper with Image Transformers". The logits of all heads are linearly mixed across the
head axis (``proj_l``) before the softmax and the attention weights again after it
(``proj_w``). Cost: O(N^2 C + N^2 h^2) for N tokens, C channels and h heads, and O(h N^2)
memory: the softmax must be explicit because the fused SDPA kernel never materialises the
attention weights that ``proj_w`` mixes, so this mixer cannot use it.

Implemented here rather than wrapping ``timm.models.cait.TalkingHeadAttn`` so the
attention-internal position encodings (rotate / bias / refine hooks) apply; the parameters
are the same as timm's (a test checks). The two head-mixing maps start as the identity, so
the operator starts as plain multi-head attention.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.attention import ATTN_POS
from operators.base import TokenMixer, make_attn_pos, merge_heads
from operators.registry import MIXERS


@MIXERS.register("talking_heads")
class TalkingHeadsAttention(TokenMixer):
    """Global attention whose heads exchange information around the softmax (CaiT)."""

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
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # (out_head, in_head) maps as parameters, not nn.Linear, so the model's Linear init keeps the identity
        self.proj_l_weight = nn.Parameter(torch.eye(num_heads))
        self.proj_l_bias = nn.Parameter(torch.zeros(num_heads))
        self.proj_w_weight = nn.Parameter(torch.eye(num_heads))
        self.proj_w_bias = nn.Parameter(torch.zeros(num_heads))
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=grid_size)

    @staticmethod
    def _mix_heads(attn: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``(B, h, N, M) -> (B, h, N, M)``: a linear map across the head axis."""
        return torch.einsum("oh,bhnm->bonm", weight, attn) + bias[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, d)
        if self.pos is not None:
            q, k = self.pos.rotate(q, k, (H, W))
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
        if self.pos is not None and (bias := self.pos.bias(q, (H, W))) is not None:
            logits = logits + bias
        attn = self._mix_heads(logits, self.proj_l_weight, self.proj_l_bias).softmax(dim=-1)
        attn = self._mix_heads(attn, self.proj_w_weight, self.proj_w_bias)  # (B, heads, N, N)
        out = attn @ v  # (B, heads, N, d)
        if self.pos is not None:
            out = self.pos.refine(out, v, (H, W))
        return self.proj(merge_heads(out)).view(B, H, W, C)
