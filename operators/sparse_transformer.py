"""Fixed and strided sparse attention patterns (Sparse Transformer) on a 2D token grid.

Paper: Child et al. 2019, "Generating Long Sequences with Sparse Transformers". Tokens are taken
in raster order (index ``i = y * W + x``) and each attends to a factorised subset:

* ``sparse_strided`` (stride l): A1(i) = {j : |i - j| < l} (the local band), A2(i) = {j : (i - j)
  mod l = 0} (every l-th token); with l = W (``stride=0``, the default) the two are roughly "the
  row around me" and "my column", the paper's setting for images.
* ``sparse_fixed`` (block l, summary c): A1(i) = {j : floor(j / l) = floor(i / l)} (my block),
  A2(i) = {j : j mod l >= l - c} (the last c tokens of every block carry the summaries); with
  l = W (``block=0``) a block is an image row.

``combine`` chooses how the two are used, as in the paper: ``union`` (every head attends A1 or A2,
"merged"), ``heads`` (even heads A1, odd heads A2, "multi-head") or ``interleave`` (blocks with an
even ``block_index`` attend A1, odd ones A2). The patterns are bidirectional: the paper's causal
masking belongs to autoregressive generation, not to an image encoder. Attention goes through the
fused SDPA kernel with the pattern as an additive mask (built once per grid): the cost is that of
global attention, O(N^2 C), not the O(N sqrt(N) C) of the paper's block-sparse kernels; the
patterns, not the speed, are what this reproduces.
"""

from __future__ import annotations

from typing import Any

import torch

from operators.attention import ATTN_POS, GlobalAttention
from operators.base import attend, merge_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF

COMBINE = ("union", "heads", "interleave")


def strided_pattern(n: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, N)`` boolean A1 (local band ``|i - j| < stride``) and A2 (``(i - j) mod stride = 0``)."""
    i = torch.arange(n)
    diff = i[:, None] - i[None, :]
    return diff.abs() < stride, diff.remainder(stride) == 0


def fixed_pattern(n: int, block: int, summary: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, N)`` boolean A1 (same block of ``block`` tokens) and A2 (key among its block's last ``summary``)."""
    i = torch.arange(n)
    same = (i[:, None] // block) == (i[None, :] // block)
    return same, (i[None, :] % block >= block - summary).expand(n, n)


class _SparsePatternAttention(GlobalAttention):
    """Global attention restricted by a factorised pattern (A1, A2) combined per ``combine``."""

    supported_pos = ATTN_POS

    def __init__(self, dim: int, grid_size: tuple[int, int], pos_encoding: str, block_index: int,
                 num_heads: int, combine: str, qkv_bias: bool) -> None:
        super().__init__(dim, grid_size=grid_size, pos_encoding=pos_encoding, num_heads=num_heads, qkv_bias=qkv_bias)
        self.combine, self.block_index = combine, block_index
        self._masks: dict[tuple, torch.Tensor] = {}

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        combine = knobs.get("combine", "union")
        if combine not in COMBINE:
            return f"combine={combine!r} is not one of {', '.join(COMBINE)}"
        if combine == "heads" and knobs.get("num_heads", 4) < 2:
            return "combine='heads' needs at least 2 heads (even heads attend A1, odd heads A2)"
        return super().check(dim, grid_size, knobs)

    def pattern(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def allowed(self, H: int, W: int) -> torch.Tensor:
        """Boolean ``(heads or 1, N, N)``: which keys each query may attend to."""
        a1, a2 = self.pattern(H, W)
        if self.combine == "union":
            return (a1 | a2)[None]
        if self.combine == "interleave":
            return (a1 if self.block_index % 2 == 0 else a2)[None]
        even = torch.arange(self.num_heads) % 2 == 0  # "heads": even heads A1, odd heads A2
        return torch.where(even[:, None, None], a1[None], a2[None])

    def _mask(self, H: int, W: int, device: torch.device) -> torch.Tensor:
        key = (H, W, str(device))
        if torch.compiler.is_compiling() or key not in self._masks:
            allowed = self.allowed(H, W).to(device)
            mask = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, NEG_INF)[None]
            if torch.compiler.is_compiling():
                return mask
            self._masks[key] = mask
        return self._masks[key]  # (1, heads or 1, N, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, d)
        out = attend(q, k, v, self.pos, (H, W), self._mask(H, W, x.device))  # (B, heads, N, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)


@MIXERS.register("sparse_strided")
class StridedSparseAttention(_SparsePatternAttention):
    """Sparse Transformer's strided pattern: local band plus every ``stride``-th token (default: row width)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        stride: int = 0,
        combine: str = "union",
        qkv_bias: bool = True,
    ) -> None:
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "stride": stride, "combine": combine})):
            raise ValueError(f"sparse_strided: {why}")
        super().__init__(dim, grid_size, pos_encoding, block_index, num_heads, combine, qkv_bias)
        self.stride = stride

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        if knobs.get("stride", 0) < 0:
            return f"stride={knobs.get('stride')} must be 0 (the row width) or positive"
        return super().check(dim, grid_size, knobs)

    def pattern(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        return strided_pattern(H * W, self.stride or W)


@MIXERS.register("sparse_fixed")
class FixedSparseAttention(_SparsePatternAttention):
    """Sparse Transformer's fixed pattern: own block of ``block`` tokens plus every block's ``summary`` last tokens."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        block: int = 0,
        summary: int = 1,
        combine: str = "union",
        qkv_bias: bool = True,
    ) -> None:
        knobs = {"num_heads": num_heads, "block": block, "summary": summary, "combine": combine}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"sparse_fixed: {why}")
        super().__init__(dim, grid_size, pos_encoding, block_index, num_heads, combine, qkv_bias)
        self.block, self.summary = block, summary

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        block, c = knobs.get("block", 0), knobs.get("summary", 1)
        if block < 0:
            return f"block={block} must be 0 (the row width) or positive"
        if c < 1 or (block and c > block):
            return f"summary={c} must be between 1 and the block length"
        return super().check(dim, grid_size, knobs)

    def pattern(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.block or W
        return fixed_pattern(H * W, block, min(self.summary, block))
