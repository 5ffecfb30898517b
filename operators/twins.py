"""Twins-SVT attention: locally-grouped self-attention and global sub-sampled attention.

Paper: Chu et al. 2021, "Twins: Revisiting the Design of Spatial Attention in Vision
Transformers". Twins-SVT alternates the two inside a stage:

- ``twins_lsa`` (LSA): attention inside non-overlapping w x w windows, never shifted. Cost
  O(N w^2 C) for N tokens, C channels. It is Swin's window attention without the shift, so it
  reuses ``WindowAttention`` (window_partition / window_reverse; grids the window does not
  divide are zero-padded and the padded keys masked out).
- ``twins_gsa`` (GSA): every token attends to a grid sub-sampled by a strided ``sr_ratio`` conv
  and LayerNorm. Cost O(N^2 C / R^2). The body is PVT's spatial-reduction attention
  (``operators/spatial_reduction.py``), which Twins' GSA is identical to; it is registered
  under the Twins name so a search space can pair it with ``twins_lsa`` as the paper does.
"""

from __future__ import annotations

from operators.registry import MIXERS
from operators.spatial_reduction import SpatialReductionAttention
from operators.window_attention import WindowAttention


@MIXERS.register("twins_lsa")
class LocallyGroupedAttention(WindowAttention):
    """Twins' LSA: non-overlapping, unshifted window attention (padded for uneven grids)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        window_size: int = 7,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, grid_size=grid_size, pos_encoding=pos_encoding, block_index=block_index,
                         num_heads=num_heads, window_size=window_size, shift=False, qkv_bias=qkv_bias)


@MIXERS.register("twins_gsa")
class GlobalSubsampledAttention(SpatialReductionAttention):
    """Twins' GSA: keys/values from the grid sub-sampled by a strided ``sr_ratio`` conv."""
