"""Focal modulation: gated multi-level depthwise context modulating a query projection.

Paper: Yang et al. 2022, "Focal Modulation Networks" (FocalNets). A stack of ``focal_level``
depthwise convolutions (kernel ``focal_window + focal_factor * l``) plus a global average
gives context at growing ranges; gates mix them and the result multiplies a query projection.
Cost: O(N C^2 + N C sum_l k_l^2) for N tokens and C channels: linear in N.

This wraps ``timm.models.focalnet.FocalModulation`` (channels-first; permuted around it).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.focalnet import FocalModulation as TimmFocalModulation

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("focal_modulation")
class FocalModulation(TokenMixer):
    """FocalNet's focal modulation (timm's implementation behind the mixer interface)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        focal_level: int = 2,
        focal_window: int = 3,
        focal_factor: int = 2,
        normalize_modulator: bool = False,
    ) -> None:
        super().__init__()
        self.modulation = TimmFocalModulation(dim, focal_window=focal_window, focal_level=focal_level,
                                              focal_factor=focal_factor, normalize_modulator=normalize_modulator)

    @classmethod
    def canonical_knobs(cls, knobs: dict[str, Any], *, depth: int) -> dict[str, Any]:
        """Level ``l`` has kernel ``focal_window + focal_factor * l``: with one level (``l = 0``)
        ``focal_factor`` cannot matter (a valid one is set to its default)."""
        factor = knobs.get("focal_factor")
        if knobs.get("focal_level") == 1 and isinstance(factor, int) and factor >= 0:
            knobs = {**knobs, "focal_factor": cls.knobs()["focal_factor"].default}
        return knobs

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        level = knobs.get("focal_level", 2)
        window, factor = knobs.get("focal_window", 3), knobs.get("focal_factor", 2)
        if level < 1:
            return f"focal_level={level} must be at least 1"
        if window < 1 or window % 2 == 0 or factor < 0 or (level > 1 and factor % 2):
            return (f"focal_window={window} must be odd and focal_factor={factor} even (or focal_level=1) "
                    "so every level's kernel is odd and keeps the map size")
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.modulation(x.permute(0, 3, 1, 2))  # (B, C, H, W)
        return y.permute(0, 2, 3, 1)  # (B, H, W, C)
