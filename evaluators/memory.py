"""Peak memory of one training step at a batch size, usable as a search constraint.

* CUDA: measured. A few AdamW steps of the real model run on the GPU and the peak is
  ``torch.cuda.max_memory_allocated`` over the last step (after the optimizer state exists).
* CPU (and anywhere without a GPU): estimated without running anything real. The model's kernels
  (``evaluators.kernels``) run forward on the ``meta`` device in training mode under
  ``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor autograd keeps for the
  backward pass; their unique storages (parameters excluded) are the activation memory. The
  estimate is

      weights + gradients + optimizer state (AdamW: 2 x weights) + saved activations + output

  which bounds the true peak from above: the peak of a step is at the start of the backward pass,
  when all saved activations are alive; gradients grow while activations are freed, so counting
  both in full over-states it slightly. Temporary buffers inside a kernel (e.g. the attention
  matrix of a fused kernel) are not saved tensors and are not counted; the math (unfused)
  attention path saves its ``N x N`` probabilities, which is what the estimate sees.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evaluators.isolation import kept_state
from operators.errors import NasError
from search_space.genome import img_hw, img_size_value

OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 1, "sgd_nomomentum": 0}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step. ``peak_bytes`` is the figure to constrain."""

    peak_bytes: int
    weights_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    batch: int
    img_size: int | tuple[int, int]  # N for a square, (H, W) otherwise
    method: str  # "cuda_max_memory_allocated" or "meta_saved_tensors"

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2 ** 20

    def to_dict(self) -> dict[str, Any]:
        return dict(peak_bytes=self.peak_bytes, peak_mib=self.peak_mib, weights_bytes=self.weights_bytes,
                    grads_bytes=self.grads_bytes, optimizer_bytes=self.optimizer_bytes,
                    activations_bytes=self.activations_bytes, batch=self.batch, img_size=self.img_size,
                    method=self.method)


def saved_activation_bytes(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(bytes autograd saves for backward, bytes of the output) of ``module(x)`` in training mode.

    Parameters are excluded; storages shared by several saved views count once.
    """
    params = {p.untyped_storage()._cdata for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s._cdata not in params:
            saved[s._cdata] = s.nbytes()
        return t

    module.train()
    # autograd must be on whatever the caller's mode: inside torch.inference_mode() (which
    # enable_grad does not lift) nothing would be saved and the estimate would shrink
    with (torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False),
          torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)):
        out = module(x)
    out_bytes = out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0
    return sum(saved.values()), out_bytes


def training_memory(
    model_or_spec: Any,
    batch: int,
    *,
    img_size: int | tuple[int, int] | None = None,
    device: str = "cpu",
    optimizer: str = "adamw",
    dtype: torch.dtype = torch.float32,
) -> MemoryEstimate:
    """Peak memory of a training step (forward, backward, optimizer step) at ``batch``.

    Args:
        model_or_spec: a genome (``ArchSpec``/dict/JSON; the CPU estimate needs no weights) or an
            ``nn.Module`` taking ``(B, C, H, W)`` (the CPU estimate then runs it on meta copies
            of its inputs only if it was built on meta, else for real at this batch). A module
            is left as it was: training steps and train-mode forwards run on a copy.
        device: ``"cuda"`` measures on the GPU; ``"cpu"`` estimates (see the module docstring).
        optimizer: ``adamw``/``adam`` (2 states per weight), ``sgd`` (momentum: 1), ``sgd_nomomentum``.
    """
    from evaluators.latency import resolve_device
    from search_space.genome import ArchSpec

    if optimizer not in OPTIMIZER_STATES:
        raise NasError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZER_STATES)}")
    if batch < 1:
        raise NasError(f"batch must be >= 1, got {batch}")
    dev = resolve_device(device)
    spec = None
    if isinstance(model_or_spec, (ArchSpec, dict, str)):
        from search_space.builder import spec_at

        spec = spec_at(model_or_spec, img_size)
    hw = img_hw(img_size or (spec.img_size if spec is not None else 224))
    size = img_size_value(hw)  # N for a square, (H, W) otherwise
    if dev.type == "cuda":
        return _cuda_peak(model_or_spec if spec is None else spec, batch, size, dev, optimizer, dtype)
    elem = torch.empty((), dtype=dtype).element_size()
    if spec is not None:
        from evaluators.kernels import arch_kernels

        n_params = acts = 0
        out_bytes = 0
        for k in arch_kernels(spec):
            with torch.device("meta"), torch.inference_mode(False):
                m = k.build().to(dtype)
                x = torch.empty(batch, *k.input_shape, device="meta", dtype=dtype)
            a, o = saved_activation_bytes(m, x)
            acts += a * k.count
            n_params += sum(p.numel() for p in m.parameters()) * k.count
            if k.kind == "head":
                out_bytes = o
    else:
        model = model_or_spec
        n_params = sum(p.numel() for p in model.parameters())
        p0 = next(iter(model.parameters()), None)
        on_meta = p0 is not None and p0.device.type == "meta"
        chans = getattr(model, "in_chans", 3)
        x = torch.empty(batch, chans, *hw, device="meta" if on_meta else "cpu", dtype=dtype)
        if not on_meta:
            x.normal_()
        # a training-mode forward updates BatchNorm statistics: run a copy (meta models have no data)
        with kept_state(model):
            acts, out_bytes = saved_activation_bytes(model if on_meta else copy.deepcopy(model), x)
    weights = n_params * elem
    opt = weights * OPTIMIZER_STATES[optimizer]
    peak = weights + weights + opt + acts + out_bytes
    return MemoryEstimate(int(peak), int(weights), int(weights), int(opt), int(acts + out_bytes), batch, size,
                          "meta_saved_tensors")


def _cuda_peak(model_or_spec: Any, batch: int, size: int | tuple[int, int], dev: torch.device, optimizer: str,
               dtype: torch.dtype) -> MemoryEstimate:  # pragma: no cover - needs a GPU
    from search_space.builder import build_model

    # the two optimizer steps change the weights: a caller's module is measured as a copy
    model = copy.deepcopy(model_or_spec) if isinstance(model_or_spec, nn.Module) else build_model(model_or_spec)
    model = model.to(dev, dtype=dtype).train()
    n_params = sum(p.numel() for p in model.parameters())
    elem = torch.empty((), dtype=dtype).element_size()
    if optimizer in ("adamw", "adam"):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9 if optimizer == "sgd" else 0.0)
    x = torch.randn(batch, getattr(model, "in_chans", 3), *img_hw(size), device=dev, dtype=dtype)
    try:
        for step in range(2):  # the second step runs with the optimizer state allocated
            if step == 1:
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            out = model(x)
            out.float().square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
    except torch.cuda.OutOfMemoryError:
        raise NasError(f"out of GPU memory at batch {batch} and {size} px") from None
    weights = n_params * elem
    states = OPTIMIZER_STATES[optimizer] * weights
    return MemoryEstimate(int(peak), int(weights), int(weights), int(states), int(max(peak - base, 0)), batch, size,
                          "cuda_max_memory_allocated")
