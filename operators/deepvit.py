"""Re-attention: attention maps mixed across heads and normalised, against attention collapse.

Paper: Zhou et al. 2021, "DeepViT: Towards Deeper Vision Transformer". After the softmax, the
heads' attention maps are combined by a learned ``heads x heads`` matrix Theta and normalised
by a BatchNorm over the head axis: ``ReAttn(Q, K, V) = BN(Theta^T softmax(Q K^T / sqrt(d))) V``
(the official code's ``reatten_matrix`` 1x1 conv and ``var_norm``). Cost: O(N^2 C + N^2 h^2) for
N tokens, C channels and h heads, and O(h N^2) memory: the attention weights must be explicit
(the fused SDPA kernel never materialises the maps Theta mixes), as for talking-heads attention.

Theta starts as the identity (a parameter, not an ``nn.Linear``, so the model's Linear init keeps
it), so the operator starts as multi-head attention followed by the normalisation. The
attention-internal position encodings act on the logits through the rotate / bias / refine hooks.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.attention import ATTN_POS
from operators.base import TokenMixer, make_attn_pos, merge_heads
from operators.registry import MIXERS
from operators.talking_heads import TalkingHeadsAttention


@MIXERS.register("reattention")
class ReAttention(TokenMixer):
    """DeepViT's re-attention: head-mixed, BatchNorm-normalised attention maps."""

    supported_pos = ATTN_POS

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads})):
            raise ValueError(f"reattention: {why}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.reatten_weight = nn.Parameter(torch.eye(num_heads))  # Theta, (out_head, in_head)
        self.reatten_bias = nn.Parameter(torch.zeros(num_heads))
        self.var_norm = nn.BatchNorm2d(num_heads)
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=grid_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, d)
        if self.pos is not None:
            q, k = self.pos.rotate(q, k, (H, W))
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
        if self.pos is not None and (bias := self.pos.bias(q, (H, W))) is not None:
            logits = logits + bias
        attn = TalkingHeadsAttention._mix_heads(logits.softmax(dim=-1), self.reatten_weight, self.reatten_bias)
        attn = self.var_norm(attn)  # (B, heads, N, N), normalised per head
        out = attn @ v  # (B, heads, N, d)
        if self.pos is not None:
            out = self.pos.refine(out, v, (H, W))
        return self.proj(merge_heads(out)).view(B, H, W, C)
