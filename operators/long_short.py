"""Long-short attention (Transformer-LS).

Paper: Zhu et al. 2021, "Long-Short Transformer: Efficient Transformers for Language and
Vision". Each query attends, in one softmax, to two key sets: *short-term* — the keys of its
w x w window widened by ``w // 2`` on every side (a (2w - 1)^2-ish region, the 2D form of the
paper's segment-wise sliding window); *long-range* — ``num_landmarks`` keys/values from the
dynamic projection ``P = softmax_N(K W_P)`` per head, ``K~ = P^T K``, ``V~ = P^T V``. The two
key sets are normalised separately by DualLN (one LayerNorm per set over the head channels) so
their scales match. Cost O(N (w + 2 floor(w/2))^2 C + N r C) for r landmarks. Grids w does not
divide are padded; padded and out-of-map keys are masked. Softmax through SDPA. Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, attend, merge_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF, window_partition, window_reverse


def halo_windows(x: torch.Tensor, win: int, halo: int) -> torch.Tensor:
    """``(B, Hp, Wp, C)`` (sides multiples of ``win``) -> ``(B * nW, (win + 2 halo)^2, C)``:
    every window's keys widened by ``halo`` tokens on each side (zeros outside the map)."""
    B, Hp, Wp, C = x.shape
    k = win + 2 * halo
    cols = F.unfold(x.permute(0, 3, 1, 2), k, padding=halo, stride=win)  # (B, C*k*k, nW)
    return cols.view(B, C, k * k, -1).permute(0, 3, 2, 1).reshape(-1, k * k, C)


@MIXERS.register("long_short")
class LongShortAttention(TokenMixer):
    """Transformer-LS: windowed short-term keys plus dynamically projected long-range keys.

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
        window_size: int = 7,
        num_landmarks: int = 16,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "window_size": window_size, "num_landmarks": num_landmarks}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"long_short: {why}")
        self.num_heads, self.window = num_heads, window_size
        d = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.dyn_proj = nn.Parameter(torch.randn(num_heads, d, num_landmarks) * d ** -0.5)  # W_P per head
        self.ln_short, self.ln_long = nn.LayerNorm(d), nn.LayerNorm(d)  # DualLN
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        r = knobs.get("num_landmarks", 16)
        if r < 1:
            return f"num_landmarks={r} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h, d = self.num_heads, C // self.num_heads
        ws = min(self.window, H, W)
        halo = ws // 2
        qkv = self.qkv(x)  # (B, H, W, 3C)
        q, k, v = qkv.view(B, H * W, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d)
        # long range: dynamic projection to r landmarks per head
        p = torch.einsum("bhnd,hdr->bhnr", k, self.dyn_proj.to(k.dtype)).softmax(dim=2)  # (B, h, N, r)
        k_long = self.ln_long(p.transpose(-2, -1) @ k)  # (B, h, r, d)
        v_long = self.ln_long(p.transpose(-2, -1) @ v)
        # short term: windows of ws x ws queries, keys widened by the halo
        pad_h, pad_w = (-H) % ws, (-W) % ws
        Hp, Wp = H + pad_h, W + pad_w
        qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, 3C)
        valid = F.pad(x.new_ones(1, H, W, 1), (0, 0, 0, pad_w, 0, pad_h))  # (1, Hp, Wp, 1)
        qw = window_partition(qkv[..., :C], (ws, ws))  # (B*nW, n, C)
        nWB, n, _ = qw.shape
        kv_halo = halo_windows(qkv[..., C:], ws, halo)  # (B*nW, m, 2C)
        m = kv_halo.shape[1]
        k_short, v_short = self.ln_short(kv_halo.view(nWB, m, 2, h, d).permute(2, 0, 3, 1, 4)).unbind(0)
        nW = nWB // B
        k_all = torch.cat([k_short, k_long.repeat_interleave(nW, dim=0)], dim=2)  # (B*nW, h, m + r, d)
        v_all = torch.cat([v_short, v_long.repeat_interleave(nW, dim=0)], dim=2)
        keep = halo_windows(valid, ws, halo)[:, :, 0]  # (nW, m): 1 for keys inside the map
        mask = F.pad((1 - keep) * NEG_INF, (0, k_long.shape[2]))  # (nW, m + r)
        mask = mask[None, :, None, None, :].expand(B, -1, 1, 1, -1).reshape(nWB, 1, 1, -1)
        qw = qw.view(nWB, n, h, d).transpose(1, 2)  # (B*nW, h, n, d)
        out = attend(qw, k_all, v_all, mask=mask)  # (B*nW, h, n, d)
        out = window_reverse(merge_heads(out), (ws, ws), Hp, Wp)[:, :H, :W]  # (B, H, W, C)
        return self.proj(out)
