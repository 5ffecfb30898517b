"""Neighborhood attention, with dilation.

Papers: Hassani et al. 2023, "Neighborhood Attention Transformer" (NAT) and Hassani & Shi 2022,
"Dilated Neighborhood Attention Transformer" (DiNAT). Each query attends to the
``kernel_size`` x ``kernel_size`` keys nearest to it among the tokens of its own dilation
class (same row and column index modulo ``dilation``); at the borders the neighbourhood is
clamped inside the map (shifted, not shrunk), as in NAT. Done with tensor ops only: the
neighbour indices of every row and column are computed once, K and V are gathered into
``(B, heads, N, k^2, d)`` tensors by advanced indexing, and each query is a batch entry of
one SDPA call with a single query token.

Cost: O(N k^2 C) time for N tokens, C channels and kernel k. Memory: the gathered K and V
hold 2 B N k^2 C elements, k^2 times the input (49x for k = 7), plus the (B, heads, N, k^2)
logits; a fused kernel such as NATTEN avoids that, this reference path does not.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, make_attn_pos, merge_heads
from operators.pos_relative import RelPosBias
from operators.registry import MIXERS


def neighbour_index(size: int, kernel: int, dilation: int, device: torch.device) -> torch.Tensor:
    """``(size, kernel)`` indices of the clamped dilated neighbourhood of each position on an axis."""
    pos = torch.arange(size, device=device)
    residue, p = pos % dilation, pos // dilation  # dilation class and place within it
    length = (size - residue + dilation - 1) // dilation  # tokens in that class
    start = (p - kernel // 2).clamp(min=0)
    start = torch.minimum(start, length - kernel)  # clamp inside the map (NAT)
    return residue[:, None] + dilation * (start[:, None] + torch.arange(kernel, device=device))


@MIXERS.register("neighborhood")
class NeighborhoodAttention(TokenMixer):
    """Each token attends to its k x k (dilated) neighbourhood, clamped at the borders (NAT/DiNAT)."""

    # rel_bias: NAT's (2k-1)^2 relative position bias per head, indexed by the neighbour offset;
    # lepe: a depthwise conv of V over the whole map added to the output
    supported_pos = frozenset({"rel_bias", "lepe"})

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        kernel_size: int = 7,
        dilation: int = 1,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "kernel_size": kernel_size, "dilation": dilation}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"neighborhood: {why}")
        self.num_heads, self.kernel_size, self.dilation = num_heads, kernel_size, dilation
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # the relative bias table covers offsets -(k-1)..(k-1): build it for a k x k region
        region = (kernel_size, kernel_size) if pos_encoding == "rel_bias" else tuple(grid_size)
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=region)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, dil = knobs.get("kernel_size", 7), knobs.get("dilation", 1)
        if k < 1 or dil < 1:
            return f"kernel_size={k} and dilation={dil} must be positive"
        if k * dil > min(grid_size):
            return (f"kernel_size x dilation = {k}x{dil} = {k * dil} exceeds the "
                    f"{grid_size[0]}x{grid_size[1]} feature map; use at most {min(grid_size)}")
        return super().check(dim, grid_size, knobs)

    def _axis_index(self, size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        """Neighbour indices on one axis; a map smaller than the built one shrinks the window."""
        dil = self.dilation if size >= self.dilation else 1
        return neighbour_index(size, min(self.kernel_size, size // dil), dil, device), dil

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h, d = self.num_heads, C // self.num_heads
        qkv = self.qkv(x).view(B, H, W, 3, h, d).permute(3, 0, 4, 1, 2, 5)  # (3, B, h, H, W, d)
        q, k, v = qkv.unbind(0)
        rows, dil_r = self._axis_index(H, x.device)  # (H, kh)
        cols, dil_c = self._axis_index(W, x.device)  # (W, kw)
        kh, kw = rows.shape[1], cols.shape[1]
        ri, ci = rows[:, None, :, None], cols[None, :, None, :]  # (H, 1, kh, 1), (1, W, 1, kw)
        kn = k[:, :, ri, ci].reshape(B, h * H * W, kh * kw, d)  # (B, h*N, k^2, d)
        vn = v[:, :, ri, ci].reshape(B, h * H * W, kh * kw, d)
        mask = None
        if isinstance(self.pos, RelPosBias):
            k0 = self.kernel_size
            qr, qc = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
            # query-minus-key offsets in units of the dilation, Swin's convention (rel_bias)
            dr = (qr[:, None] - rows) // dil_r + k0 - 1  # (H, kh)
            dc = (qc[:, None] - cols) // dil_c + k0 - 1  # (W, kw)
            idx = dr[:, None, :, None] * (2 * k0 - 1) + dc[None, :, None, :]  # (H, W, kh, kw)
            mask = self.pos.table[idx.reshape(-1)].view(H * W, kh * kw, h)  # (N, k^2, h)
            mask = mask.permute(2, 0, 1).reshape(1, h * H * W, 1, kh * kw).to(q.dtype)
        out = F.scaled_dot_product_attention(q.reshape(B, h * H * W, 1, d), kn, vn, attn_mask=mask)
        out = out.view(B, h, H * W, d)  # (B, h, N, d)
        if self.pos is not None:
            out = self.pos.refine(out, v.reshape(B, h, H * W, d), (H, W))  # LePE; a no-op for the bias
        return self.proj(merge_heads(out)).view(B, H, W, C)
