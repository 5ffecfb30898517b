"""Sliding-window attention with global tokens.

Paper: Zhang et al. 2021, "Multi-Scale Vision Longformer: A New Vision Transformer for
High-Resolution Image Encoding" (ViL). Each token attends to the w x w tokens around it (the
window is clamped inside the map at the borders, as in neighbourhood attention, so every
token sees exactly w^2 neighbours) and to ``num_global`` global tokens. The global tokens are
learned embeddings that first attend to every token and to each other; the local tokens then
read their updated keys and values. (In ViL the global tokens are carried from layer to layer;
a token mixer only passes the grid on, so here they gather the whole map within the layer.)

Vectorised with tensor ops through the fused SDPA kernel, in blocks as in HaloNet: queries are
cut into w x w blocks; each block reads one (2w-1) x (2w-1) region of keys that holds every
query's clamped window, and a mask (built once per geometry) keeps each query to its own
window. Cost: O(N (4w^2 + G) C) time (the region is about 4x the window), O(G N C) for the
global step, and O(N C) memory for the key/value regions (about 4x the values) plus an
O(N w^2) mask -- instead of the O(N w^2 C) of gathering every token's neighbours.

Position encodings: the position-only logit biases (``rel_bias``, ``levit_bias``) give each
neighbour the bias of its offset inside a w x w window (read from the encoding's w x w table);
RoPE (``rope_axial``, ``rope_mixed``) rotates q and k with their coordinates on the whole map
before the regions are cut, which is relative by construction. Global tokens get no bias or
rotation. iRPE is not supported (its bias depends on each query's content).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, attend, make_attn_pos, merge_heads, split_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF


@dataclass(frozen=True)
class _Axis:
    """One axis of the blocked layout: ``nb`` query blocks of ``b``, key regions of ``k``."""

    nb: int
    b: int
    k: int
    region: torch.Tensor  # (nb, k) map index of each region position
    allowed: torch.Tensor  # (nb, b, k) region position inside the query's window
    q_local: torch.Tensor  # (nb, b) the query's own place inside its window
    k_local: torch.Tensor  # (nb, b, k) the key's place inside the query's window (clamped)


def _axis(size: int, win: int, device: torch.device) -> _Axis:
    """Blocked layout along one axis of length ``size`` for clamped windows of ``win``."""
    b, k = win, min(2 * win - 1, size)
    nb = -(-size // b)
    i = torch.arange(nb * b, device=device).view(nb, b).clamp(max=size - 1)  # padded queries reuse the last
    start = (i - win // 2).clamp(0, size - win)  # (nb, b) window start of each query
    r0 = (torch.arange(nb, device=device) * b - win // 2).clamp(0, size - k)  # (nb,) region start
    region = r0[:, None] + torch.arange(k, device=device)  # (nb, k)
    off = region[:, None, :] - start[:, :, None]  # (nb, b, k) key offset inside the query's window
    return _Axis(nb, b, k, region, (off >= 0) & (off < win), i - start, off.clamp(0, win - 1))


@MIXERS.register("longformer")
class VisionLongformerAttention(TokenMixer):
    """Local w x w sliding-window attention plus a few learned global tokens (ViL)."""

    supported_pos = frozenset({"rel_bias", "levit_bias", "rope_axial", "rope_mixed"})
    no_weight_decay_params = ("global_tokens",)

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
        self._layouts: dict[tuple, tuple[_Axis, _Axis, torch.Tensor]] = {}

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        g, w = knobs.get("num_global", 1), knobs.get("window_size", 7)
        if g < 0:
            return f"num_global={g} must be 0 or more"
        if w < 1:
            return f"window_size={w} must be at least 1"
        return super().check(dim, grid_size, knobs)

    @staticmethod
    def _build_layout(H: int, W: int, wh: int, ww: int, device: torch.device) -> tuple[_Axis, _Axis, torch.Tensor]:
        ra, ca = _axis(H, wh, device), _axis(W, ww, device)
        ok = ra.allowed[:, None, :, None, :, None] & ca.allowed[None, :, None, :, None, :]  # (nbh, nbw, bh, bw, kh, kw)
        mask = torch.zeros(ok.shape, device=device).masked_fill(~ok, NEG_INF)
        return ra, ca, mask.view(ra.nb * ca.nb, 1, ra.b * ca.b, ra.k * ca.k)  # (nB, 1, L, S)

    def _layout(self, H: int, W: int, wh: int, ww: int, device: torch.device) -> tuple[_Axis, _Axis, torch.Tensor]:
        """Blocked layout for this geometry, built once and reused (rebuilt while tracing)."""
        if torch.compiler.is_compiling():
            return self._build_layout(H, W, wh, ww, device)
        key = (H, W, wh, ww, str(device))
        if key not in self._layouts:
            self._layouts[key] = self._build_layout(H, W, wh, ww, device)
        return self._layouts[key]

    def _window_bias(self, q: torch.Tensor, ra: _Axis, ca: _Axis, wh: int, ww: int) -> torch.Tensor | None:
        """``(nB, h, L, S)`` logit bias of each key's offset inside the query's window, or None."""
        table = self.pos.bias(q, (wh, ww))  # (1, h, n, n) over a wh x ww window
        if table is None:
            return None
        ql = ra.q_local[:, None, :, None] * ww + ca.q_local[None, :, None, :]  # (nbh, nbw, bh, bw)
        kl = ra.k_local[:, None, :, None, :, None] * ww + ca.k_local[None, :, None, :, None, :]  # (.., kh, kw)
        nB, L, S = ra.nb * ca.nb, ra.b * ca.b, ra.k * ca.k
        bias = table[0][:, ql.reshape(nB, L, 1), kl.reshape(nB, L, S)]  # (h, nB, L, S)
        return bias.transpose(0, 1)

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
        h, d = self.num_heads, C // self.num_heads
        wh, ww = min(self.window, H), min(self.window, W)
        qkv = self.qkv(x).view(B, H * W, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        gk = gv = None
        if self.global_tokens is not None:  # before any rotation: the global step has no coordinates
            gk, gv = self._global_kv(k, v, B)  # (B, h, G, d)
        if self.pos is not None:
            q, k = self.pos.rotate(q, k, (H, W))  # RoPE: coordinates on the whole map
        ra, ca, mask = self._layout(H, W, wh, ww, x.device)
        nB, L, S = ra.nb * ca.nb, ra.b * ca.b, ra.k * ca.k

        def regions(t: torch.Tensor) -> torch.Tensor:  # (B, h, N, d) -> (B * nB, h, S, d)
            t = t.view(B, h, H, W, d)[:, :, ra.region][:, :, :, :, ca.region]  # (B, h, nbh, kh, nbw, kw, d)
            return t.permute(0, 2, 4, 1, 3, 5, 6).reshape(B * nB, h, S, d)

        k_reg, v_reg = regions(k), regions(v)
        q = torch.nn.functional.pad(q.view(B, h, H, W, d), (0, 0, 0, ca.nb * ca.b - W, 0, ra.nb * ra.b - H))
        q = q.view(B, h, ra.nb, ra.b, ca.nb, ca.b, d).permute(0, 2, 4, 1, 3, 5, 6).reshape(B * nB, h, L, d)
        bias = mask  # (nB, 1, L, S)
        if self.pos is not None and (wb := self._window_bias(q, ra, ca, wh, ww)) is not None:
            bias = bias + wb  # (nB, h, L, S)
        if gk is not None:  # every block also reads the G global tokens, unmasked
            G = gk.shape[2]
            k_reg = torch.cat([k_reg, gk.repeat_interleave(nB, dim=0)], dim=2)  # (B * nB, h, S + G, d)
            v_reg = torch.cat([v_reg, gv.repeat_interleave(nB, dim=0)], dim=2)
            bias = torch.cat([bias, bias.new_zeros(*bias.shape[:-1], G)], dim=-1)
        bias = bias.repeat(B, 1, 1, 1)  # (B * nB, 1 or h, L, S (+G))
        out = attend(q, k_reg, v_reg, mask=bias)  # (B * nB, h, L, d)
        out = out.view(B, ra.nb, ca.nb, h, ra.b, ca.b, d).permute(0, 3, 1, 4, 2, 5, 6)
        out = out.reshape(B, h, ra.nb * ra.b, ca.nb * ca.b, d)[:, :, :H, :W].reshape(B, h, H * W, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)
