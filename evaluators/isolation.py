"""Measure a module without changing it: the shared guard every evaluator uses.

An evaluator that is handed a module (latency, FLOPs, memory, zero-cost proxies, proxy
FLOPs) may need it in eval mode, in another dtype, on another device or in channels-last
memory format. It must leave the caller's module exactly as it was: its ``state_dict`` values,
dtypes, devices and memory formats, every submodule's train/eval flag, each parameter's
``requires_grad`` and ``.grad``, and the process's thread setting (``torch.get_num_threads``).

- ``kept_state(module)`` restores the flags and thread count whatever happens inside.
- ``measured_copy(module, ...)`` returns the module itself when it already has the device,
  dtype and memory format asked for, else a converted deep copy (a cast to bfloat16 and back
  would not give the same weights, so conversions never touch the caller's tensors).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def kept_state(module: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``module``; afterwards restore every submodule's ``training`` flag, every
    parameter's ``requires_grad`` and the CPU thread count as they were on entry."""
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    threads = torch.get_num_threads()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in grads:
            if p.requires_grad != requires_grad:  # unchanged ones untouched: an inference tensor refuses the call
                p.requires_grad_(requires_grad)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _fits(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> bool:
    if t.device != device:
        return False
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return False
    return not (channels_last and t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last))


def measured_copy(module: nn.Module, device: torch.device, dtype: torch.dtype | None = None,
                  memory_format: str = "contiguous") -> nn.Module:
    """``module`` on ``device`` in ``dtype`` (floating tensors only) and ``memory_format``
    (``"contiguous"`` or ``"channels_last"``): the module itself when nothing has to change,
    else a deep copy converted; the caller's tensors are never cast or moved."""
    channels_last = memory_format == "channels_last"
    tensors = [*module.parameters(), *module.buffers()]
    if all(_fits(t, device, dtype, channels_last) for t in tensors):
        return module
    work = copy.deepcopy(module).to(device=device, dtype=dtype) if dtype is not None else \
        copy.deepcopy(module).to(device=device)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    return work
