"""Focal self-attention: fine-grained local tokens plus coarse pooled tokens from farther away.

Paper: Yang et al. 2021, "Focal Self-attention for Local-Global Interactions in Vision
Transformers" (Focal Transformer). The queries of each ``w x w`` window attend to two levels of
keys/values: level 0, the fine tokens of the window expanded by ``expand_size`` on every side
(``(w + 2e)^2`` tokens: the union of the paper's window and its four rolled corner regions), and
level 1, window-pooled tokens (one per window) in the ``focal_window x focal_window`` windows
around it. Padding (grids the window does not divide) and positions outside the map are masked.
Cost: O(N ((w + 2e)^2 + f^2) C) for N tokens, C channels, window w, expansion e, focal window f.

Deviations: two focal levels (the paper's setting for classification), window pooling by
averaging over the valid tokens (the paper's default is a learned linear pooling) and no relative
position bias. Distinct from FocalNets' focal modulation (``focal_modulation``). Everything is
gathered with ``F.unfold`` (no loop over windows) and attended through the fused SDPA kernel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, attend, merge_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF, window_partition, window_reverse


def unfold_heads(t: torch.Tensor, kernel: int, stride: int, padding: int, heads: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B * L, heads, kernel^2, C / heads)``: the ``kernel x kernel`` patches at
    the ``L`` positions ``F.unfold`` visits (row-major), split into heads."""
    B, C = t.shape[:2]
    p = F.unfold(t, kernel, padding=padding, stride=stride)  # (B, C * k^2, L)
    p = p.view(B, heads, C // heads, kernel * kernel, -1)
    return p.permute(0, 4, 1, 3, 2).reshape(-1, heads, kernel * kernel, C // heads)


@MIXERS.register("focal_attention")
class FocalSelfAttention(TokenMixer):
    """Focal Transformer's two-level focal self-attention (fine expanded window + coarse pooled windows)."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        window_size: int = 7,
        expand_size: int = 3,
        focal_window: int = 3,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "window_size": window_size, "expand_size": expand_size,
                 "focal_window": focal_window}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"focal_attention: {why}")
        self.num_heads, self.window = num_heads, window_size
        self.expand, self.focal_window = expand_size, focal_window
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        e, f = knobs.get("expand_size", 3), knobs.get("focal_window", 3)
        if e < 0:
            return f"expand_size={e} must be at least 0"
        if f < 1 or f % 2 == 0:
            return f"focal_window={f} must be a positive odd number"
        return super().check(dim, grid_size, knobs)

    def _keys(self, kv: torch.Tensor, valid: torch.Tensor, ws: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values ``(B*nW, heads, L, 2d)`` per window and the validity ``(nW, L)`` of each."""
        e, f = self.expand, self.focal_window
        fine = unfold_heads(kv, ws + 2 * e, ws, e, heads)  # (B*nW, heads, (w+2e)^2, 2d)
        fine_ok = F.unfold(valid, ws + 2 * e, padding=e, stride=ws)[0].T  # (nW, (w+2e)^2)
        # level 1: one token per window, the mean over its valid tokens
        count = F.avg_pool2d(valid, ws)  # (1, 1, nh, nw) share of valid tokens per window
        pooled = F.avg_pool2d(kv * valid, ws) / count.clamp_min(1e-6)  # (B, 2C, nh, nw)
        coarse = unfold_heads(pooled, f, 1, f // 2, heads)  # (B*nW, heads, f^2, 2d)
        coarse_ok = F.unfold((count > 0).to(kv.dtype), f, padding=f // 2)[0].T  # (nW, f^2)
        return torch.cat([fine, coarse], dim=2), torch.cat([fine_ok, coarse_ok], dim=1) > 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws = min(self.window, H, W)
        pad_h, pad_w = (-H) % ws, (-W) % ws
        qkv = F.pad(self.qkv(x), (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, 3C)
        Hp, Wp = H + pad_h, W + pad_w
        heads, d = self.num_heads, C // self.num_heads
        q = window_partition(qkv[..., :C], (ws, ws))  # (B*nW, w^2, C)
        q = q.view(q.shape[0], ws * ws, heads, d).transpose(1, 2)  # (B*nW, heads, w^2, d)
        # k and v of one head side by side, so one unfold gathers both: (B, heads * 2d, Hp, Wp)
        kv = qkv[..., C:].view(B, Hp, Wp, 2, heads, d).permute(0, 4, 3, 5, 1, 2).reshape(B, 2 * C, Hp, Wp)
        valid = torch.zeros(1, 1, Hp, Wp, device=x.device, dtype=x.dtype)
        valid[..., :H, :W] = 1
        kv, ok = self._keys(kv, valid, ws, heads)  # (B*nW, heads, L, 2d), (nW, L)
        k, v = kv.split(d, dim=-1)
        mask = torch.zeros(ok.shape, device=x.device, dtype=x.dtype).masked_fill(~ok, NEG_INF)
        mask = mask[:, None, None].repeat(B, 1, 1, 1)  # (B*nW, 1, 1, L)
        out = attend(q, k, v, mask=mask)  # (B*nW, heads, w^2, d)
        out = self.proj(merge_heads(out))  # (B*nW, w^2, C)
        return window_reverse(out, (ws, ws), Hp, Wp)[:, :H, :W].contiguous()  # (B, H, W, C)
