"""Gated positional self-attention (GPSA).

Paper: d'Ascoli et al. 2021, "ConViT: Improving Vision Transformers with Soft Convolutional
Inductive Biases". Each head mixes content attention ``softmax(q k^T / sqrt(d))`` with positional
attention ``softmax(r_ij . v_pos)`` over the relative offset ``r_ij = (dx, dy, dx^2 + dy^2)``
through a learned gate: ``A = (1 - sigmoid(g)) A_content + sigmoid(g) A_pos``. The positional part
is initialised local (each head attends around its own offset within a ``sqrt(heads)`` square,
strength ``locality_strength``), so the layer starts convolution-like. Cost: O(N^2 C), as global
attention, plus an ``heads x N x N`` positional logit table per grid.

``A V = (1 - s) A_content V + s A_pos V`` (both rows sum to one, so ConViT's renormalisation is a
no-op): the content half goes through the fused SDPA kernel; the positional weights do not depend
on the input, so their softmax is one ``heads x N x N`` table per forward, applied to V by a matmul. The parameters and the relative offsets follow
``timm.models.convit.GPSA`` (a test loads its weights and compares outputs on a square grid);
timm derives the offsets from a square token count, here any ``H x W`` grid works.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from operators.base import TokenMixer, attend, merge_heads
from operators.dcnv3 import OwnInitLinear
from operators.registry import MIXERS


def relative_offsets(h: int, w: int) -> torch.Tensor:
    """``(N, N, 3)``: ``(dx, dy, dx^2 + dy^2)`` from query i to key j (``dx = x_j - x_i``), row-major tokens."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    xs, ys = xs.flatten().float(), ys.flatten().float()
    dx, dy = xs[None, :] - xs[:, None], ys[None, :] - ys[:, None]  # (N, N)
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1)


@MIXERS.register("gpsa")
class GatedPositionalSelfAttention(TokenMixer):
    """ConViT's GPSA: per-head gated mix of content and (locally initialised) positional attention."""

    supported_pos = frozenset()  # the positional attention is built in

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        locality_strength: float = 1.0,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads})):
            raise ValueError(f"gpsa: {why}")
        self.num_heads, self.grid_size = num_heads, tuple(grid_size)
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = OwnInitLinear(3, num_heads)  # keeps its local init inside a model
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.register_buffer("rel", relative_offsets(*self.grid_size), persistent=False)
        self.local_init(locality_strength)

    @torch.no_grad()
    def local_init(self, locality_strength: float) -> None:
        """ConViT's local init: head ``(h1, h2)`` of a ``k x k`` square (``k = floor(sqrt(heads))``)
        peaks at offset ``(h1 - c, h2 - c)`` with sharpness ``locality_strength``."""
        k = int(math.isqrt(self.num_heads))
        center = (k - 1) / 2 if k % 2 == 0 else k // 2
        h1, h2 = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
        rows = (h1 + k * h2).flatten()  # head index, as timm
        w = torch.zeros(self.num_heads, 3)
        w[rows, 2] = -1
        w[rows, 1] = 2 * (h1.flatten() - center).float()
        w[rows, 0] = 2 * (h2.flatten() - center).float()
        self.pos_proj.weight.copy_(w * locality_strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        d = C // self.num_heads
        qk = self.qk(x).view(B, H * W, 2, self.num_heads, d)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, heads, N, d)
        v = self.v(x).view(B, H * W, self.num_heads, d).transpose(1, 2)  # (B, heads, N, d)
        rel = self.rel if (H, W) == self.grid_size else relative_offsets(H, W).to(x.device)
        pos_logits = self.pos_proj(rel.to(x.dtype)).permute(2, 0, 1)  # (heads, N, N)
        content = attend(q, k, v)  # (B, heads, N, d)
        positional = pos_logits.softmax(dim=-1) @ v  # (heads, N, N) @ (B, heads, N, d) -> (B, heads, N, d)
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        out = (1.0 - gate) * content + gate * positional  # (B, heads, N, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)
