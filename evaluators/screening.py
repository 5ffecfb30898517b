"""Screening: FLOPs and parameters of a genome without allocating its weights.

``screen(spec)`` splits the genome into kernels (``evaluators.kernels``), builds each distinct
kernel once on the ``meta`` device (shapes only: no memory, no initialisation), counts it with
the same counter as ``count_flops`` and caches the result by the kernel's signature. A model is
the sum of its kernels times their multiplicities, so a search that revisits widths, grids and
mixers pays almost nothing per candidate. A test checks the sum against ``count_flops`` and
``count_params`` on the full model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from evaluators.flops import count_flops_meta, counting_mode
from evaluators.kernels import Kernel, arch_kernels
from search_space.genome import ArchSpec


@dataclass(frozen=True)
class KernelCost:
    """MACs (batch 1), parameters and uncounted ops of one kernel."""

    macs: int
    params: int
    uncounted: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Costs:
    """Cheap costs of one genome at one image size (batch 1).

    ``flops`` are MACs (fvcore's convention); ``*_per_stage`` list the stages in order; the stem
    and head (final norm + classifier) are reported apart, so
    ``flops == stem_flops + sum(flops_per_stage) + head_flops`` (same for params).
    """

    flops: int
    params: int
    flops_per_stage: tuple[int, ...]
    params_per_stage: tuple[int, ...]
    stem_flops: int = 0
    stem_params: int = 0
    head_flops: int = 0
    head_params: int = 0
    uncounted: dict[str, int] = field(default_factory=dict)
    img_size: int | tuple[int, int] = 224  # N for a square, (H, W) otherwise

    def to_dict(self) -> dict[str, Any]:
        return dict(flops=self.flops, params=self.params, flops_per_stage=list(self.flops_per_stage),
                    params_per_stage=list(self.params_per_stage), stem_flops=self.stem_flops,
                    stem_params=self.stem_params, head_flops=self.head_flops, head_params=self.head_params,
                    uncounted=dict(self.uncounted), img_size=self.img_size)


_CACHE: dict[tuple, KernelCost] = {}
_LOCK = threading.Lock()
CACHE_LIMIT = 50_000


def kernel_cost(kernel: Kernel) -> KernelCost:
    """Count one kernel on the meta device (cached by its signature)."""
    hit = _CACHE.get(kernel.key)
    if hit is not None:
        return hit
    with torch.device("meta"), counting_mode():  # the count (so the cached cost) is mode-independent
        module = kernel.build()
    params = sum(p.numel() for p in module.parameters())
    fc = count_flops_meta(module, kernel.input_shape)
    cost = KernelCost(int(fc.total), int(params), tuple(sorted(fc.uncounted.items())))
    with _LOCK:
        if len(_CACHE) >= CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[kernel.key] = cost
    return cost


def clear_cache() -> None:
    """Forget every cached kernel cost (benchmarks measure the cold path with it)."""
    with _LOCK:
        _CACHE.clear()


def screen(spec: ArchSpec | dict | str, img_size: int | tuple[int, int] | None = None) -> Costs:
    """FLOPs (MACs) and parameters of a genome, per stage and in total, without real weights.

    Args:
        spec: an ``ArchSpec`` (or its dict / JSON); validated first.
        img_size: input side in pixels, or ``(H, W)`` (default: the genome's ``img_size``).

    Raises:
        ValueError: the genome is invalid (the message names the field).
    """
    from search_space.builder import spec_at

    spec = spec_at(spec, img_size)  # N or (H, W)
    n = len(spec.stages)
    flops, params = [0] * n, [0] * n
    stem_f = stem_p = head_f = head_p = 0
    uncounted: dict[str, int] = {}
    for k in arch_kernels(spec):
        c = kernel_cost(k)
        f, p = c.macs * k.count, c.params * k.count
        for op, calls in c.uncounted:
            uncounted[op] = uncounted.get(op, 0) + calls * k.count
        if k.part == "stem":
            stem_f, stem_p = stem_f + f, stem_p + p
        elif k.part == "head":
            head_f, head_p = head_f + f, head_p + p
        else:
            i = int(k.part.split(".")[1])
            flops[i] += f
            params[i] += p
    return Costs(stem_f + sum(flops) + head_f, stem_p + sum(params) + head_p, tuple(flops), tuple(params),
                 stem_f, stem_p, head_f, head_p, uncounted, spec.img_size)


screen_genome = screen
