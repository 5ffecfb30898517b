"""Sliding-window attention with global tokens.

Paper: Zhang et al. 2021, "Multi-Scale Vision Longformer: A New Vision Transformer for
High-Resolution Image Encoding" (ViL). Each token attends to the w x w tokens around it (the
window is clamped inside the map at the borders, as in neighbourhood attention, so every
token sees exactly w^2 neighbours) and to ``num_global`` global tokens. The global tokens are
learned embeddings that first attend to every token and to each other; the local tokens then
read their updated keys and values. (In ViL the global tokens are carried from layer to layer;
a token mixer only passes the grid on, so here they gather the whole map within the layer.)
Cost: O(N (w^2 + G) C) time for N tokens, C channels and G global tokens, plus O(G N C) for
the global step; memory O(N w^2 C) for the gathered neighbour keys and values.

Position encodings: the position-only logit biases (``rel_bias``, ``levit_bias``) give each
neighbour the bias of its offset inside a w x w window (read from the encoding's w x w table);
RoPE (``rope_axial``, ``rope_mixed``) rotates q and k with their coordinates on the whole map
before the neighbours are gathered, which is relative by construction. Global tokens get no
bias or rotation. iRPE is not supported (its bias depends on each query's content).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, attend, make_attn_pos, merge_heads, split_heads
from operators.registry import MIXERS


def neighbour_index(H: int, W: int, wh: int, ww: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamped ``wh x ww`` neighbourhoods of every token of an ``H x W`` map.

    Returns ``(index (N, wh*ww))``, the flat token ids of each neighbourhood, and
    ``(local (N,))``, each token's own flat position inside its ``wh x ww`` window.
    """
    rows, cols = torch.arange(H, device=device), torch.arange(W, device=device)
    r0 = (rows - wh // 2).clamp(0, H - wh)  # (H,) window start per row
    c0 = (cols - ww // 2).clamp(0, W - ww)
    nr = r0[:, None] + torch.arange(wh, device=device)  # (H, wh)
    nc = c0[:, None] + torch.arange(ww, device=device)  # (W, ww)
    index = nr[:, None, :, None] * W + nc[None, :, None, :]  # (H, W, wh, ww)
    local = (rows - r0)[:, None] * ww + (cols - c0)[None, :]  # (H, W)
    return index.reshape(H * W, wh * ww), local.reshape(H * W)


@MIXERS.register("longformer")
class VisionLongformerAttention(TokenMixer):
    """Local w x w sliding-window attention plus a few learned global tokens (ViL)."""

    supported_pos = frozenset({"rel_bias", "levit_bias", "rope_axial", "rope_mixed"})

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        window_size: int = 7,
        num_global: int = 1,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.global_tokens = nn.Parameter(torch.randn(num_global, dim) * 0.02) if num_global else None
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=(window_size, window_size))
        self._index: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    no_weight_decay_params = ("global_tokens",)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        g, w = knobs.get("num_global", 1), knobs.get("window_size", 7)
        if g < 0:
            return f"num_global={g} must be 0 or more"
        if w < 1:
            return f"window_size={w} must be at least 1"
        return super().check(dim, grid_size, knobs)

    def _neighbours(self, H: int, W: int, wh: int, ww: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbour index for this geometry, built once and reused (rebuilt while tracing)."""
        if torch.compiler.is_compiling():
            return neighbour_index(H, W, wh, ww, device)
        key = (H, W, wh, ww, str(device))
        if key not in self._index:
            self._index[key] = neighbour_index(H, W, wh, ww, device)
        return self._index[key]

    def _global_kv(self, k: torch.Tensor, v: torch.Tensor, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global tokens attend to every token and to each other; returns their new k, v ``(B, h, G, d)``."""
        g = self.global_tokens.unsqueeze(0).expand(B, -1, -1)  # (B, G, C)
        gq, gk, gv = (split_heads(t, self.num_heads) for t in self.qkv(g).chunk(3, dim=-1))
        out = attend(gq, torch.cat([gk, k], dim=2), torch.cat([gv, v], dim=2))  # (B, h, G, d)
        g = g + self.proj(merge_heads(out))  # (B, G, C)
        _, gk, gv = (split_heads(t, self.num_heads) for t in self.qkv(g).chunk(3, dim=-1))
        return gk, gv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        wh, ww = min(self.window, H), min(self.window, W)
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        gk = gv = None
        if self.global_tokens is not None:  # before any rotation: the global step has no coordinates
            gk, gv = self._global_kv(k, v, B)  # (B, h, G, d)
        bias = None
        if self.pos is not None:
            q, k = self.pos.rotate(q, k, (H, W))  # RoPE: coordinates on the whole map
            bias = self.pos.bias(q, (wh, ww))  # (1, h, n, n) for a wh x ww window, or None
        index, local = self._neighbours(H, W, wh, ww, x.device)  # (N, n), (N,)
        k_loc, v_loc = k[:, :, index], v[:, :, index]  # (B, h, N, n, d)
        if bias is not None:  # row = each query's own place in its window
            bias = bias[:, :, local].unsqueeze(3)  # (1, h, N, 1, n)
        if gk is not None:
            G = gk.shape[2]
            k_loc = torch.cat([k_loc, gk.unsqueeze(2).expand(-1, -1, H * W, -1, -1)], dim=3)  # (B, h, N, n+G, d)
            v_loc = torch.cat([v_loc, gv.unsqueeze(2).expand(-1, -1, H * W, -1, -1)], dim=3)
            if bias is not None:
                bias = torch.cat([bias, bias.new_zeros(*bias.shape[:-1], G)], dim=-1)
        out = attend(q.unsqueeze(3), k_loc, v_loc, mask=bias).squeeze(3)  # (B, h, N, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)
