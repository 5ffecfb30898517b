"""QuadTree attention.

Paper: Tang et al. 2022, "QuadTree Attention for Vision Transformers" (the QuadTree-B form).
Queries, keys and values form pyramids of ``num_levels`` levels by 2x2 average pooling (ceil).
At the coarsest level every query attends to every key; at each finer level a query attends
only to the 4 children of the ``topk`` keys its parent query scored highest at the level above
(the selection of the most relevant regions, refined level by level). QuadTree-B sums the
messages of all levels: a coarse message is broadcast to the fine queries below it. Cost
O(N_0^2 C + sum_l N_l 4 K C) for N_l tokens at level l (N_0 = N / 4^(L-1)), so near-linear in N
for a fixed K. The selection (top-k of the logits) carries no gradient, as in the paper; the
messages are softmax attention through SDPA with the gathered keys as the key axis (the
coarsest level attends densely). Children outside odd-sized maps are masked. Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, attend, merge_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF


def _pool(t: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """2x2 average pooling (ceil) of ``t (B, h, N, d)`` laid out on ``grid``."""
    B, h, N, d = t.shape
    img = t.transpose(2, 3).reshape(B, h * d, *grid)
    img = F.avg_pool2d(img, 2, ceil_mode=True)  # (B, h*d, ceil(H/2), ceil(W/2))
    return img.view(B, h, d, -1).transpose(2, 3), tuple(img.shape[-2:])


def _parent_index(grid: tuple[int, int], coarse: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``(N,)``: index at the coarser grid of each token's parent (y // 2, x // 2)."""
    y = torch.arange(grid[0], device=device) // 2
    x = torch.arange(grid[1], device=device) // 2
    return (y[:, None] * coarse[1] + x[None, :]).flatten()


@MIXERS.register("quadtree")
class QuadTreeAttention(TokenMixer):
    """QuadTree-B: dense attention at the coarsest level, top-k-guided sparse attention below.

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
        num_levels: int = 2,
        topk: int = 4,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "num_levels": num_levels, "topk": topk}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"quadtree: {why}")
        self.num_heads, self.levels, self.topk = num_heads, num_levels, topk
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        L, K = knobs.get("num_levels", 2), knobs.get("topk", 4)
        if L < 1:
            return f"num_levels={L} must be positive"
        if K < 1:
            return f"topk={K} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h, d = self.num_heads, C // self.num_heads
        q, k, v = self.qkv(x).view(B, H * W, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d)
        pyramid, grids = [(q, k, v)], [(H, W)]  # finest first
        for _ in range(self.levels - 1):
            pooled = [_pool(t, grids[-1]) for t in pyramid[-1]]
            pyramid.append(tuple(p for p, _ in pooled))
            grids.append(pooled[0][1])
        pyramid, grids = pyramid[::-1], grids[::-1]  # coarsest first
        q0, k0, v0 = pyramid[0]
        messages = [attend(q0, k0, v0)]  # dense at the coarsest level: (B, h, N_0, d)
        with torch.no_grad():  # the selection: each coarse query's top-k keys (no gradient)
            scores = q0 @ k0.transpose(-2, -1)  # (B, h, N_0, N_0)
            top = scores.topk(min(self.topk, scores.shape[-1]), dim=-1).indices  # (B, h, N_0, K)
        for lvl in range(1, self.levels):
            (ql, kl, vl), grid, coarse = pyramid[lvl], grids[lvl], grids[lvl - 1]
            top = top[:, :, _parent_index(grid, coarse, x.device)]  # (B, h, N_l, K): the parent's picks
            cy, cx = top // coarse[1], top % coarse[1]
            dy = torch.tensor([0, 0, 1, 1], device=x.device)
            dx = torch.tensor([0, 1, 0, 1], device=x.device)
            ky = (2 * cy[..., None] + dy).flatten(-2)  # (B, h, N_l, 4K) child rows
            kx = (2 * cx[..., None] + dx).flatten(-2)
            inside = (ky < grid[0]) & (kx < grid[1])
            idx = torch.where(inside, ky * grid[1] + kx, 0)  # (B, h, N_l, 4K)
            Nl, S = idx.shape[2], idx.shape[3]
            flat = idx.reshape(B, h, Nl * S, 1).expand(-1, -1, -1, d)
            kg = kl.gather(2, flat).view(B, h, Nl, S, d)  # (B, h, N_l, 4K, d)
            vg = vl.gather(2, flat).view(B, h, Nl, S, d)
            mask = torch.zeros(inside.shape, device=x.device).masked_fill(~inside, NEG_INF)[..., None, :]
            messages.append(attend(ql[..., None, :], kg, vg, mask=mask)[..., 0, :])  # (B, h, N_l, d)
            if lvl < self.levels - 1:  # this level's picks among its 4K candidates (each parent pick
                with torch.no_grad():  # has an in-map child, so masked children are never picked)
                    sparse = (ql[..., None, :] @ kg.transpose(-2, -1))[..., 0, :] + mask[..., 0, :]  # (B, h, N_l, 4K)
                    top = idx.gather(-1, sparse.topk(min(self.topk, S), dim=-1).indices)  # (B, h, N_l, K)
        out = messages[-1]  # finest level, (B, h, N, d)
        for lvl in range(self.levels - 1):  # broadcast each coarse message to the fine tokens below it
            shift = self.levels - 1 - lvl
            ys = torch.arange(H, device=x.device) // 2 ** shift
            xs = torch.arange(W, device=x.device) // 2 ** shift
            out = out + messages[lvl][:, :, (ys[:, None] * grids[lvl][1] + xs[None, :]).flatten()]
        return self.proj(merge_heads(out)).view(B, H, W, C)
