from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from evaluators import zero_cost as zc
from evaluators.data import DataSpec, load_dataset
from nas.errors import NasError
from search_space import build_model
from search_space.genome import ArchSpec, StageSpec, StemSpec


@pytest.fixture(scope="module")
def batch():
    return load_dataset(DataSpec(img_size=32, subset=64)).batch(32)


def deit_like(depth: int = 2, dim: int = 32) -> nn.Module:
    """A small DeiT-like NasNet: patchify stem, global attention, LayerNorm, GELU MLP."""
    torch.manual_seed(0)
    spec = ArchSpec(stem=StemSpec("patchify", 4),
                    stages=(StageSpec(depth=depth, dim=dim, mixer="attention", mixer_knobs={"num_heads": 2},
                                      pos="abs"),), num_classes=10, img_size=32)
    return build_model(spec)


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("make", [deit_like,
                                  lambda: timm.create_model("test_vit", num_classes=10, img_size=32),
                                  lambda: timm.create_model("test_efficientnet", num_classes=10)],
                         ids=["nasnet_deit_like", "timm_test_vit", "timm_test_efficientnet_bn"])
def test_all_proxies_finite_repeatable_and_non_mutating(make, batch):
    x, y = batch
    model = make()
    model.train()
    before = _state(model)
    s = zc.zero_cost_scores(model, x, y)
    assert set(s) == set(zc.PROXIES)
    assert all(math.isfinite(v) for v in s.values()), s
    assert s["params"] == sum(p.numel() for p in model.parameters())
    assert s["flops"] > 10_000 and s["grad_norm"] > 0 and s["snip"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # incl. BN stats
    assert model.training and all(p.grad is None for p in model.parameters())
    assert zc.zero_cost_scores(model, x, y) == s  # same seed, same scores


def test_naswot_matches_the_definition_on_a_relu_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 2))
    x = torch.randn(6, 3, 2, 2)
    h1 = net[1](net[0](x))
    h2 = net[3](net[2](h1))
    codes = torch.cat([h1 > 0, h2 > 0], 1).double()  # pre-activation signs of both units
    k = codes @ codes.T + (1 - codes) @ (1 - codes).T
    assert zc.naswot(net, x) == pytest.approx(torch.linalg.slogdet(k)[1].item(), rel=1e-9)
    # identical images give a singular kernel
    assert zc.naswot(net, x[:1].expand(4, -1, -1, -1)) == float("-inf")


def test_synflow_matches_the_definition_on_a_linear_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    w1, b1, w2, b2 = (p.detach().abs().double() for p in net.parameters())
    # R = 1^T (|W2| (|W1| 1 + |b1|) + |b2|); saliency = sum |theta * dR/dtheta|
    h = w1 @ torch.ones(4, dtype=torch.float64) + b1
    sal = (w1 * (w2.sum(0)[:, None] * torch.ones(1, 4))).sum() + (b1 * w2.sum(0)).sum()
    sal += (w2 * h[None, :]).sum() + b2.sum()
    assert zc.synflow(net, (1, 2, 2)) == pytest.approx(math.log(sal.item()), rel=1e-9)


def test_synflow_layernorm_keeps_signal_and_scale():
    """A pre-norm residual stack: LayerNorm would zero an all-ones signal; the surrogate keeps
    it positive and bounded, so deeper stacks stay finite (no float64 overflow)."""

    class Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.norm, self.fc1, self.act, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

        def forward(self, x):
            return x + self.fc2(self.act(self.fc1(self.norm(x))))

    def net(depth: int) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 64), *[Block(64) for _ in range(depth)],
                             nn.LayerNorm(64), nn.Linear(64, 10))

    shallow, deep = zc.synflow(net(2), (1, 4, 4)), zc.synflow(net(60), (1, 4, 4))
    assert math.isfinite(shallow) and math.isfinite(deep) and deep > shallow


def test_grad_proxies_see_the_labels(batch):
    x, y = batch
    m = deit_like()
    a = zc.snip(m, x, y)
    b = zc.snip(m, x, (y + 1) % 10)
    assert a != b and zc.grad_norm(m, x, y) > 0


def test_score_one_proxy_from_loaded_data():
    data = load_dataset(DataSpec(img_size=32, subset=64))
    m = deit_like()
    a = zc.score("naswot", m, data, seed=0)
    assert a == zc.score("naswot", m, data, seed=0) and math.isfinite(a)
    assert zc.score("naswot", m, data.batch(64, seed=0)) == a  # the same seeded batch
    assert zc.score("params", m, data) == sum(p.numel() for p in m.parameters())


def test_unknown_proxy_is_an_error(batch):
    with pytest.raises(NasError, match="unknown zero-cost proxy 'jacov'"):
        zc.zero_cost_scores(deit_like(), *batch, proxies=["jacov"])
