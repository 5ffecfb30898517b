"""Deformable convolution v3 (DCNv3), InternImage's token mixer.

Paper: Wang et al. 2023, "InternImage: Exploring Large-Scale Vision Foundation Models with
Deformable Convolutions" (CVPR); one of the five spatial token mixers compared in Lin et al. 2023,
"A Unified and Fair Comparison of Spatial Token Mixers" (STM-Evaluation, seed 002).

Each of ``groups`` channel groups samples ``K x K`` points per location, at the regular kernel grid
(dilation ``dilation``) plus learned offsets, bilinearly (zero outside the map), and sums them with
modulation weights that are softmax-normalised over the ``K x K`` points. Offsets and weights come
from a depthwise-conv + LayerNorm + GELU branch; values are a linear projection of the input and
the result is projected out. Cost: O(N C (C + K^2)) MACs for N tokens and C channels (the linear
offset/mask heads add O(N C G K^2)); memory O(N C K^2) for the sampled values.

The sampling is vectorised with ``torch.nn.functional.grid_sample`` (``align_corners=False``, zero
padding), as InternImage's own pure-PyTorch reference ``dcnv3_core_pytorch``: no custom kernel and
no loop over points, groups or tokens. timm has no DCNv3. A test checks the sampling core against
``torchvision.ops.deform_conv2d`` (depthwise, all-ones weight, offset groups = ``groups``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


class OwnInitLinear(nn.Module):
    """``F.linear`` with its own parameters: not an ``nn.Linear``, so the model-wide Linear init
    (``search_space.builder``: truncated normal) leaves the operator's own init in place
    (DCNv3's zero offsets, ConViT's local positional attention)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def kernel_offsets(kernel_size: int, dilation: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(K*K, 2)`` (x, y) pixel offsets of the regular kernel grid around its centre, row-major in y."""
    r = torch.arange(kernel_size, device=device, dtype=dtype) * dilation
    r = r - r[-1] / 2
    ky, kx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([kx.flatten(), ky.flatten()], dim=-1)


def dcnv3_sample(value: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_size: int,
                 dilation: int = 1, offset_scale: float = 1.0) -> torch.Tensor:
    """The DCNv3 core: deformable, modulated sampling per channel group.

    Args:
        value: ``(B, H, W, C)`` values, ``C = G * c``.
        offset: ``(B, H, W, G, K*K, 2)`` learned (x, y) offsets in pixels (scaled by ``offset_scale``).
        mask: ``(B, H, W, G, K*K)`` modulation weights (already normalised by the caller).

    Returns:
        ``(B, H, W, C)``: ``out[p, g*c:(g+1)*c] = sum_k mask[p, g, k] * value_g(p + p_k + offset[p, g, k])``,
        bilinear, with zeros outside the map.
    """
    B, H, W, C = value.shape
    G, P = mask.shape[-2:]
    dev, dt = value.device, value.dtype
    ys, xs = torch.meshgrid(torch.arange(H, device=dev, dtype=dt), torch.arange(W, device=dev, dtype=dt),
                            indexing="ij")
    base = torch.stack([xs, ys], dim=-1)[:, :, None, None, :]  # (H, W, 1, 1, 2) pixel centres
    pos = base + kernel_offsets(kernel_size, dilation, dev, dt) + offset * offset_scale  # (B, H, W, G, P, 2)
    size = torch.tensor([W, H], device=dev, dtype=dt)
    grid = (2 * pos + 1) / size - 1  # align_corners=False: pixel i -> (2i+1)/size - 1
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(B * G, H, W * P, 2)  # (B*G, H, W*P, 2)
    v = value.view(B, H, W, G, C // G).permute(0, 3, 4, 1, 2).reshape(B * G, C // G, H, W)  # (B*G, c, H, W)
    s = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*G, c, H, W*P)
    s = s.view(B, G, C // G, H, W, P)
    m = mask.permute(0, 3, 1, 2, 4)[:, :, None]  # (B, G, 1, H, W, P)
    out = (s * m).sum(-1)  # (B, G, c, H, W)
    return out.permute(0, 3, 4, 1, 2).reshape(B, H, W, C)


@MIXERS.register("dcnv3")
class DCNv3(TokenMixer):
    """InternImage's DCNv3 operator: grouped deformable sampling with softmax-normalised modulation."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        groups: int = 4,
        kernel_size: int = 3,
        dilation: int = 1,
        offset_scale: float = 1.0,
        dw_kernel_size: int = 3,
    ) -> None:
        super().__init__()
        knobs = {"groups": groups, "kernel_size": kernel_size, "dilation": dilation, "dw_kernel_size": dw_kernel_size}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"dcnv3: {why}")
        self.groups, self.kernel_size, self.dilation, self.offset_scale = groups, kernel_size, dilation, offset_scale
        points = kernel_size * kernel_size
        self.dw_conv = nn.Conv2d(dim, dim, dw_kernel_size, padding=dw_kernel_size // 2, groups=dim)
        self.dw_norm = nn.LayerNorm(dim)
        self.offset = OwnInitLinear(dim, groups * points * 2)  # zero init survives the model's Linear init
        self.mask = OwnInitLinear(dim, groups * points)
        self.input_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """InternImage's init: zero offsets and mask logits (a uniform box filter), Xavier projections."""
        for lin in (self.offset, self.mask):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        g = knobs.get("groups", 4)
        if g <= 0 or dim % g:
            return f"groups={g} must be positive and divide the width {dim}"
        for name in ("kernel_size", "dw_kernel_size"):
            k = knobs.get(name, 3)
            if k < 1 or k % 2 == 0:
                return f"{name}={k} must be a positive odd number"
        if knobs.get("dilation", 1) < 1:
            return f"dilation={knobs.get('dilation')} must be at least 1"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        G, P = self.groups, self.kernel_size * self.kernel_size
        value = self.input_proj(x)  # (B, H, W, C)
        x1 = self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
        x1 = F.gelu(self.dw_norm(x1))
        offset = self.offset(x1).view(B, H, W, G, P, 2)  # (B, H, W, G, P, 2)
        mask = self.mask(x1).view(B, H, W, G, P).softmax(-1)  # (B, H, W, G, P)
        out = dcnv3_sample(value, offset, mask, self.kernel_size, self.dilation, self.offset_scale)
        return self.output_proj(out)  # (B, H, W, C)
