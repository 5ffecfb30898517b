"""Every weight-free counter gives the same figure in every autograd mode (issue 20.4).

Inside ``torch.inference_mode()`` the dispatcher skips the Autograd keys, so composite ops such as
``conv2d`` reached the meta counter undecomposed and went uncounted: ``screen`` of a conv-stem
genome came out 29% low there, and the kernel cache then served the low figure to later calls.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from evaluators import count_flops, screen
from evaluators.flops import count_flops_meta
from evaluators.kernels import arch_kernels
from evaluators.latency_predictor import _features
from evaluators.memory import training_memory
from evaluators.screening import clear_cache, kernel_cost
from search_space import PRESETS, build_model

SPEC = PRESETS["convformer_s18"].replace(img_size=64)  # stem: 7x7 conv, stride 4, 3 -> 64 channels
# by hand at 64 px: a 16 x 16 x 64 output, 3 * 7 * 7 MACs each, then a LayerNorm (5 per element)
STEM_MACS = 16 * 16 * 64 * 3 * 7 * 7 + 16 * 16 * 64 * 5

MODES = {
    "inference_mode": torch.inference_mode,
    "no_grad": torch.no_grad,
    "autocast_bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


@pytest.fixture(scope="module")
def reference() -> int:
    clear_cache()
    total = screen(SPEC).flops
    assert total == int(count_flops(build_model(SPEC), (3, 64, 64)))  # both engines agree outside any mode
    return total


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("inside_first", [True, False], ids=["inside-first", "outside-first"])
def test_screen_and_its_kernel_cache(reference, mode, inside_first):
    clear_cache()  # the first call fills the cache: the order decides which mode's figure it keeps
    results = []
    for inside in (inside_first, not inside_first):
        with MODES[mode]() if inside else contextlib.nullcontext():
            costs = screen(SPEC)
        results.append((costs.flops, costs.stem_flops))
    assert results == [(reference, STEM_MACS)] * 2


@pytest.mark.parametrize("mode", list(MODES))
def test_full_model_count(reference, mode):
    model = build_model(SPEC)
    with MODES[mode]():
        inside = count_flops(model, (3, 64, 64))
        built_inside = build_model(SPEC)  # a model made in the mode, counted outside it
    assert int(inside) == int(count_flops(built_inside, (3, 64, 64))) == reference
    assert inside.module("stem") == STEM_MACS and not inside.uncounted


@pytest.mark.parametrize("mode", list(MODES))
def test_meta_counter_and_predictor_features(mode):
    stem = next(k for k in arch_kernels(SPEC) if k.kind == "stem")
    with torch.device("meta"):
        module = stem.build()
    clear_cache()
    with MODES[mode]():
        inside = int(count_flops_meta(module, stem.input_shape))
        features = _features(stem, 1)  # the latency predictor's regression inputs (MACs first)
    assert inside == int(count_flops_meta(module, stem.input_shape)) == STEM_MACS
    assert features == _features(stem, 1) and features[0] == STEM_MACS / 1e6
    assert kernel_cost(stem).macs == STEM_MACS


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_training_memory_estimate(mode):
    outside = training_memory(SPEC, 2).peak_bytes
    with MODES[mode]():
        inside = training_memory(SPEC, 2).peak_bytes
    assert inside == outside and outside > 0


def test_dtype_and_memory_format_do_not_change_counts(reference):
    """The other state the counters read: the default dtype the kernels are built in (the screening
    cache key has none, so it must not matter) and the model's dtype and memory format."""
    old = torch.get_default_dtype()
    clear_cache()
    torch.set_default_dtype(torch.float64)
    try:
        in_float64 = screen(SPEC).flops
    finally:
        torch.set_default_dtype(old)
    assert in_float64 == screen(SPEC).flops == reference
    model = build_model(SPEC)
    assert int(count_flops(model.to(memory_format=torch.channels_last), (3, 64, 64))) == reference
    assert int(count_flops(model.to(torch.bfloat16), (3, 64, 64))) == reference
