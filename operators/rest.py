"""Efficient multi-head self-attention (ResT's EMSA).

Paper: Zhang & Yang 2021, "ResT: An Efficient Transformer for Visual Recognition". Keys and
values come from the grid reduced by a depthwise conv (kernel ``sr_ratio + 1``, stride
``sr_ratio``) and LayerNorm, as in PVT's spatial reduction but depthwise; and the heads interact:
a 1x1 convolution across heads mixes the attention logits before the softmax and an instance
norm (per head, over the N x n map) follows it. Cost O(N^2 C / R^2 + h^2 N^2 / R^2) time and
O(h N^2 / R^2) memory: the head mixing needs the explicit logits, so with
``head_transform=True`` the softmax is explicit (the fused SDPA kernel never exposes them);
``head_transform=False`` (ResT's ``apply_transform=False``) goes through SDPA. Reuses the body of
``operators/spatial_reduction.py``. Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import merge_heads, split_heads
from operators.registry import MIXERS
from operators.spatial_reduction import _ReducedKVAttention


@MIXERS.register("rest")
class EfficientMultiHeadAttention(_ReducedKVAttention):
    """ResT EMSA: depthwise-conv-reduced keys/values and a 1x1 head-mixing conv on the logits.

    ``(B, H, W, C) -> (B, H, W, C)``. Raises ``ValueError`` (one line) when ``check`` rejects the knobs.
    """

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        sr_ratio: int = 2,
        head_transform: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "sr_ratio": sr_ratio})):
            raise ValueError(f"rest: {why}")
        super().__init__(dim, num_heads, qkv_bias)
        r = sr_ratio
        self.sr = nn.Conv2d(dim, dim, r + 1, stride=r, padding=r // 2, groups=dim) if r > 1 else nn.Identity()
        self.norm = nn.LayerNorm(dim) if r > 1 else nn.Identity()
        self.transform = nn.Conv2d(num_heads, num_heads, 1) if head_transform and num_heads > 1 else None
        self.scale = (dim // num_heads) ** -0.5

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        r = knobs.get("sr_ratio", 2)
        if not 1 <= r <= min(grid_size):
            return f"sr_ratio={r} must be between 1 and the feature map side {min(grid_size)}"
        return super().check(dim, grid_size, knobs)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        return self.sr(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return super().forward(x)  # SDPA
        B, H, W, C = x.shape
        q = split_heads(self.q(x).view(B, H * W, C), self.num_heads)  # (B, heads, N, d)
        r = self.norm(self.reduce(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2))  # (B, n, C)
        k, v = (split_heads(t, self.num_heads) for t in self.kv(r).chunk(2, dim=-1))  # (B, heads, n, d)
        logits = self.transform((q * self.scale) @ k.transpose(-2, -1))  # (B, heads, N, n), heads mixed
        attn = logits.softmax(dim=-1)
        if attn.shape[-2] * attn.shape[-1] > 1:  # a 1 x 1 map (a 1 x 1 grid) has no statistics
            attn = F.instance_norm(attn)  # per head over the N x n map
        return self.proj(merge_heads(attn @ v)).view(B, H, W, C)


