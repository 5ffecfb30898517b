"""A genome as a bag of kernels: the unit both FLOP screening and the latency predictor use.

A ``NasNet`` is ``stem -> stages -> norm + head`` and every stage is ``downsample + grid
position encoding`` (its *entry*) followed by ``depth`` unified blocks that differ only by their
``block_index``. Mixers may use the index's parity (Swin's shifted windows alternate), so a
stage is two block kernels (even and odd index) with multiplicities ``ceil(d/2)`` and
``floor(d/2)``. A model is then a few kernels with multiplicities, each identified by a
hashable signature (what it is, its widths, the grid it sees, its knobs): the same kernel in
another genome is looked up, not recomputed. This is nn-Meter's kernel-level decomposition
(Zhang et al. 2021, "nn-Meter: towards accurate latency prediction of deep-learning model
inference on diverse edge devices"), applied to attention blocks.

The modules are built with the same classes and arguments as ``search_space.builder``
(``NasStage`` itself for stages), and a test checks that the kernel sum equals the count of the
whole model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from search_space.genome import ArchSpec, StageSpec, img_hw, img_size_value

KINDS = ("stem", "entry", "block", "head")


@dataclass(frozen=True)
class Kernel:
    """One distinct piece of a model.

    Attributes:
        kind: ``"stem"``, ``"entry"`` (a stage's downsample + grid position encoding),
            ``"block"`` (one unified block) or ``"head"`` (final norm + classifier).
        key: hashable signature; equal keys mean identical modules on identical input shapes.
        part: where it sits: ``"stem"``, ``"stages.<i>"`` or ``"head"``.
        count: how many times it occurs in that part.
        input_shape: input without the batch dimension (``(C, H, W)`` for the stem, channels-last
            ``(H, W, C)`` for the rest).
        build: makes the module (call it under ``torch.device("meta")`` to skip the weights).
    """

    kind: str
    key: tuple
    part: str
    count: int
    input_shape: tuple[int, ...]
    build: Callable[[], nn.Module] = field(compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``block attention d192 14x14``."""
        k = dict(self.key[1:])
        if self.kind == "block":
            g = k["grid"]
            return f"block {k['mixer']} d{k['dim']} {g[0]}x{g[1]} i{k['parity']}"
        return f"{self.kind} {self.input_shape}"


def _items(**kw: Any) -> tuple:
    return tuple(sorted((k, _hashable(v)) for k, v in kw.items()))


def _hashable(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


class _HeadKernel(nn.Module):
    """``NasNet``'s final norm + classifier head on the last grid."""

    def __init__(self, dim: int, num_classes: int, pool: str, mlp_ratio: float, drop_rate: float,
                 num_heads: int) -> None:
        super().__init__()
        from operators.heads import ClassifierHead

        self.norm = nn.LayerNorm(dim)
        self.head = ClassifierHead(dim, num_classes, pool=pool, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
                                   num_heads=num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))  # (B, H, W, C) -> (B, num_classes)


class _EntryKernel(nn.Module):
    """A stage's downsample followed by its grid position encoding."""

    def __init__(self, downsample: nn.Module, pos: nn.Module) -> None:
        super().__init__()
        self.downsample, self.pos = downsample, pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos(self.downsample(x))  # (B, H, W, C_in) -> (B, h, w, C)


class _StageParts:
    """Builds a stage of depth <= 2 once (per default device) and hands out its pieces."""

    def __init__(self, in_dim: int, stage: StageSpec, grid: tuple[int, int]) -> None:
        self.in_dim, self.stage, self.grid = in_dim, stage, grid
        self._built: dict[str, nn.Module] = {}

    def _get(self) -> nn.Module:
        device = str(torch.get_default_device())
        if device not in self._built:
            # plain tensors even when asked from inside torch.inference_mode(): the module is
            # shared by every later user of these kernels, in whatever mode they run
            with torch.inference_mode(False):
                self._built[device] = _stage_module(self.in_dim, self.stage, self.grid, min(self.stage.depth, 2))
        return self._built[device]

    def entry(self) -> nn.Module:
        st = self._get()
        return _EntryKernel(st.downsample, st.pos)

    def block0(self) -> nn.Module:
        return self._get().blocks[0]

    def block1(self) -> nn.Module:
        return self._get().blocks[1]


def _stage_module(in_dim: int, stage: StageSpec, grid: tuple[int, int], depth: int) -> nn.Module:
    from search_space.builder import NasStage

    return NasStage(in_dim, dataclasses.replace(stage, depth=depth), grid, [0.0] * depth)


def arch_kernels(spec: ArchSpec, img_size: int | tuple[int, int] | None = None) -> list[Kernel]:
    """Decompose ``spec`` (at ``img_size``, default the genome's) into kernels."""
    from operators import STEMS

    img = img_size_value(img_hw(img_size or spec.img_size))  # N, or (H, W) for a rectangle
    if img != spec.img_size:
        spec = spec.replace(img_size=img)
    grids = spec.stage_grids()
    dims = [s.dim for s in spec.stages]
    stem = spec.stem
    kernels = [Kernel(
        "stem", ("stem", *_items(kind=stem.kind, patch=stem.patch_size, knobs=stem.knobs, cin=spec.in_chans,
                                 dim=dims[0], img=img)),
        "stem", 1, (spec.in_chans, *spec.img_hw),
        lambda: STEMS.get(stem.kind)(spec.in_chans, dims[0], patch_size=stem.patch_size, **stem.knob_dict),
    )]
    prev_grid, in_dim = grids[0], dims[0]
    for i, (s, grid) in enumerate(zip(spec.stages, grids, strict=True)):
        part = f"stages.{i}"
        stage_sig = _items(dim=s.dim, mixer=s.mixer, knobs=s.mixer_knobs, pos=s.pos, mlp=s.mlp,
                           mlp_ratio=s.mlp_ratio, layer_scale=s.layer_scale is not None,
                           channel_attn=s.channel_attn, grid=grid)

        parts = _StageParts(in_dim, s, grid)
        kernels.append(Kernel("entry", ("entry", *_items(ds=s.downsample, pos=s.pos, cin=in_dim, dim=s.dim,
                                                         grid_in=prev_grid, grid=grid)),
                              part, 1, (*prev_grid, in_dim), parts.entry))
        for parity in (0, 1):
            n = (s.depth + 1 - parity) // 2
            if n == 0:
                continue
            kernels.append(Kernel("block", ("block", *stage_sig, ("parity", parity)), part, n, (*grid, s.dim),
                                  parts.block0 if parity == 0 else parts.block1))
        prev_grid, in_dim = grid, s.dim
    heads = next((v for s in spec.stages[::-1] for k, v in s.mixer_knobs if k == "num_heads"), 1)
    h = spec.head
    kernels.append(Kernel(
        "head", ("head", *_items(dim=dims[-1], classes=spec.num_classes, pool=h.pool, mlp_ratio=h.mlp_ratio,
                                 heads=heads, grid=grids[-1])),
        "head", 1, (*grids[-1], dims[-1]),
        lambda: _HeadKernel(dims[-1], spec.num_classes, h.pool, h.mlp_ratio, h.drop_rate, heads),
    ))
    return kernels
