"""No evaluator changes the module it is given (issue 13 item 6).

Each evaluator that takes an ``nn.Module`` runs on a model in a mixed state (training mode with
one submodule in eval mode, some parameters frozen, BatchNorm statistics that a train-mode
forward would move, a gradient already accumulated); afterwards the model's ``state_dict``
values, dtypes, devices and strides, every submodule's training flag, each parameter's
``requires_grad`` and ``.grad`` and ``torch.get_num_threads()`` must be exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import evaluators
from evaluators import latency, zero_cost
from evaluators.proxy import forward_macs
from search_space import ArchSpec, StageSpec, StemSpec, build_model

IMG = 32


def _model() -> torch.nn.Module:
    spec = ArchSpec(stem=StemSpec("conv", 4), stages=(  # the conv stem has BatchNorm
        StageSpec(1, 16, "sepconv"),
        StageSpec(1, 32, "attention", {"num_heads": 2}, pos="abs", downsample="conv"),
    ), num_classes=4, img_size=IMG)
    torch.manual_seed(0)
    model = build_model(spec).train()
    model.stages[0].eval()  # a mixed state: one stage frozen in eval mode
    model.stem.proj.weight.requires_grad_(False)
    model(torch.randn(2, 3, IMG, IMG)).sum().backward()  # a gradient is already there
    return model


def _snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: (v.detach().clone(), v.dtype, v.device, v.stride()) for k, v in model.state_dict().items()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "threads": torch.get_num_threads(),
    }


def _same(a: dict, b: dict) -> None:
    assert a["modes"] == b["modes"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["threads"] == b["threads"]
    assert a["state"].keys() == b["state"].keys()
    for k, (v, dtype, dev, stride) in a["state"].items():
        w, dtype2, dev2, stride2 = b["state"][k]
        assert (dtype, dev, stride) == (dtype2, dev2, stride2), k
        assert torch.equal(v, w), k
    for k, g in a["grads"].items():
        h = b["grads"][k]
        assert (g is None) == (h is None), k
        assert g is None or torch.equal(g, h), k


def _x() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, IMG, IMG, generator=g), torch.tensor([0, 1, 2, 3])


EVALUATORS: dict[str, Callable[[torch.nn.Module], object]] = {
    "measure_latency_bf16": lambda m: evaluators.measure_latency(m, dtype="bfloat16", img_size=IMG, warmup=1,
                                                                 repeats=2, threads=2),
    "measure_latency_f16": lambda m: evaluators.measure_latency(m, dtype="float16", img_size=IMG, warmup=1,
                                                                repeats=2),
    "measure_latency_channels_last": lambda m: evaluators.measure_latency(
        m, img_size=IMG, memory_format="channels_last", warmup=1, repeats=2),
    "measure_latency_f32": lambda m: evaluators.measure_latency(m, img_size=IMG, warmup=1, repeats=2, threads=2),
    "measure_module": lambda m: latency.measure_module(m, (3, IMG, IMG), dtype="bfloat16", warmup=1, repeats=2),
    "measure_parts": lambda m: latency.measure_parts(m, (3, IMG, IMG), ["stem", "stages.1"], dtype="bfloat16",
                                                     warmup=1, repeats=2),
    "count_flops": lambda m: evaluators.count_flops(m, input_size=(3, IMG, IMG)),
    "count_params": lambda m: (evaluators.count_params(m), evaluators.count_params(m, trainable_only=True)),
    "params_by_part": lambda m: evaluators.params_by_part(m),
    "training_memory": lambda m: evaluators.training_memory(m, 2, img_size=IMG),
    "forward_macs": lambda m: forward_macs(m, 3, IMG),
    **{f"zero_cost_{p}": (lambda m, p=p: evaluators.zero_cost_scores(m, *_x(), proxies=[p]))
       for p in zero_cost.PROXIES},
}


@pytest.mark.parametrize("name", list(EVALUATORS))
def test_evaluator_leaves_the_model_untouched(name: str) -> None:
    model = _model()
    before = _snapshot(model)
    EVALUATORS[name](model)
    _same(before, _snapshot(model))


def test_meta_counters_keep_the_modes() -> None:
    """``count_flops`` on a meta model (``count_flops_meta``) restores every submodule's flag."""
    with torch.device("meta"):
        model = _model_on_meta()
    modes = {n: m.training for n, m in model.named_modules()}
    assert len(set(modes.values())) == 2
    evaluators.count_flops(model, input_size=(3, IMG, IMG))
    evaluators.count_flops_meta(model, (3, IMG, IMG))
    evaluators.training_memory(model, 2, img_size=IMG)
    assert {n: m.training for n, m in model.named_modules()} == modes


def _model_on_meta() -> torch.nn.Module:
    model = build_model(ArchSpec(stem=StemSpec("conv", 4), stages=(StageSpec(1, 16, "sepconv"),),
                                 num_classes=4, img_size=IMG)).train()
    model.stem.eval()
    return model


def test_measure_latency_bfloat16_example() -> None:
    """The issue's example: a training-mode model measured in bfloat16 stays float32 and training."""
    model = _model()
    model.train()
    evaluators.measure_latency(model, dtype="bfloat16", img_size=IMG, warmup=1, repeats=2)
    assert model.training and all(m.training for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
