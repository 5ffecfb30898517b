"""FLOPs (MACs) and parameters: published figures, presets vs timm, every mixer, meta screening."""

from __future__ import annotations

import functools
import random

import pytest
import timm
import timm.layers.config as timm_config
import torch
from torch import nn

from evaluators import count_flops, count_params, screen
from evaluators.flops import IGNORED_OPS, count_flops_meta, plain_fvcore_macs
from evaluators.params import params_by_part
from evaluators.random_genomes import CORE_MIXERS, random_genome
from nas.errors import NasError
from operators import MIXERS
from search_space import PRESETS, build_model
from search_space.presets import PRESET_TIMM

# GMACs at 224 px as published (timm's model cards / the papers' tables).
PUBLISHED = {
    "deit_tiny_patch16_224": 1.3, "deit_small_patch16_224": 4.6, "swin_tiny_patch4_window7_224": 4.5,
    "pvt_v2_b1": 2.1, "poolformer_s12": 1.8, "convformer_s18": 3.9, "caformer_s18": 4.1,
    "levit_128s": 0.305, "pit_s_224": 2.9, "convnext_tiny": 4.5,
}
# models whose timm code path changes with the fused-attention setting: counted both ways
# (one per timm attention implementation: ViT/DeiT/PiT share one class, Swin, PVTv2, MetaFormer)
ATTENTION_MODELS = ("deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "pvt_v2_b1", "caformer_s18")


def _published_window(value: float) -> tuple[float, float]:
    """3% either side, or the printed rounding ("1.3" allows 1.25 to 1.35), whichever is wider."""
    decimals = len(str(value).split(".")[1]) if "." in str(value) else 0
    half = 0.5 * 10 ** -decimals
    return min(value * 0.97, value - half), max(value * 1.03, value + half)


@functools.cache
def _timm_count(name: str, fused: bool):
    old = timm_config._USE_FUSED_ATTN
    timm_config.set_fused_attn(fused)
    try:
        model = timm.create_model(name, pretrained=False)  # modules read the setting when built
    finally:
        timm_config._USE_FUSED_ATTN = old
    return count_flops(model, (3, 224, 224))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_gmacs(name, fused):
    if not fused and name not in ATTENTION_MODELS:
        pytest.skip("the unfused path of this model's attention class is covered by another model")
    fc = _timm_count(name, fused)
    lo, hi = _published_window(PUBLISHED[name])
    assert lo <= fc.gmacs <= hi, f"{name}: {fc.gmacs:.4f} GMACs, published {PUBLISHED[name]} ({lo:.3f}..{hi:.3f})"
    assert fc.uncounted == {}, f"{name}: ops seen but not counted: {fc.uncounted}"


def test_fused_setting_really_switches_the_attention_path():
    """The two settings trace different ops (SDPA vs explicit matmuls) yet count the same."""
    fused, unfused = _timm_count("deit_tiny_patch16_224", True), _timm_count("deit_tiny_patch16_224", False)
    assert "scaled_dot_product_attention" in fused.by_operator
    assert "scaled_dot_product_attention" not in unfused.by_operator and "matmul" in unfused.by_operator
    assert fused.total == pytest.approx(unfused.total, rel=1e-6)


def test_plain_fvcore_misses_attention():
    """The bug this counter fixes: fvcore alone gives DeiT-Ti ~1.08 G (SDPA counted as 0)."""
    model = timm.create_model("deit_tiny_patch16_224")
    plain = plain_fvcore_macs(model) / 1e9
    ours = count_flops(model).gmacs
    assert plain < 1.1 < 1.25 < ours
    assert ours - plain == pytest.approx(12 * 2 * 197 ** 2 * 192 / 1e9, rel=1e-6)  # 12 layers x (QK^T + PV)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_matches_timm_and_screening(preset):
    spec = PRESETS[preset]
    model = build_model(spec)
    ours = count_flops(model)
    ref = _timm_count(PRESET_TIMM[preset], True)
    assert ours.total == pytest.approx(ref.total, rel=0.03), f"{preset}: {ours.gmacs:.4f} vs timm {ref.gmacs:.4f}"
    assert ours.uncounted == {}
    # screening on the meta device agrees exactly with the full-weight trace, per stage too
    costs = screen(spec)
    assert costs.flops == ours.total
    assert costs.params == count_params(model)
    for i in range(len(spec.stages)):
        assert costs.flops_per_stage[i] == ours.module(f"stages.{i}")
        assert costs.params_per_stage[i] == params_by_part(model).by_part[f"stages.{i}"]
    assert costs.stem_flops == ours.module("stem")
    assert costs.head_flops == ours.module("norm") + ours.module("head")


def _mixer(name: str, grid: tuple[int, int], dim: int = 64, block_index: int = 1) -> nn.Module:
    cls = MIXERS.get(name)
    knobs = cls.contract_knobs(grid) if hasattr(cls, "contract_knobs") else {}
    return cls(dim, grid_size=grid, pos_encoding="none", block_index=block_index, **knobs)


@pytest.mark.parametrize("name", MIXERS.names())
def test_every_mixer_is_counted(name):
    """Every registered mixer: nothing uncounted, and the meta-device count (screening) agrees."""
    grid = (14, 14)
    torch.manual_seed(0)
    fc = count_flops(_mixer(name, grid), (*grid, 64))
    assert fc.uncounted == {}, f"mixer {name!r} uses ops with no FLOP handle: {fc.uncounted}"
    with torch.device("meta"):
        meta_module = _mixer(name, grid)
    meta = count_flops_meta(meta_module, (*grid, 64))
    assert meta.uncounted == {}, f"mixer {name!r}: meta counter misses {meta.uncounted}"
    assert meta.total == fc.total, f"mixer {name!r}: meta {meta.total} != traced {fc.total}"
    if any(p.requires_grad for p in meta_module.parameters()) and name not in ("pool", "identity"):
        assert fc.total > 0


@pytest.mark.parametrize("seed", range(3))
def test_screening_equals_full_count_on_random_genomes(seed):
    spec = random_genome(random.Random(seed), img_size=64, num_classes=10, mixers=None, pos=None)
    model = build_model(spec)
    full = count_flops(model, (3, 64, 64))
    costs = screen(spec)
    assert costs.flops == full.total, spec.summary()
    assert costs.params == count_params(model), spec.summary()
    assert costs.uncounted == full.uncounted == {}


class _Ops(nn.Module):
    def forward(self, x):  # x: (2, 3, 10, 8)
        k = torch.ones(2, 3, 20, 8)
        v = torch.ones(2, 3, 20, 16)
        a = nn.functional.scaled_dot_product_attention(x, k, v)  # 2*3*10*20*(8+16)
        b = torch.matmul(torch.ones(5, 4), torch.ones(3, 4, 6))  # broadcast: 3*5*6*4
        c = torch.einsum("bhnd,bhmd->bhnm", x, k)  # 2*3*10*20*8
        d = torch.baddbmm(torch.zeros(6, 10, 20), x.reshape(6, 10, 8), k.reshape(6, 20, 8).transpose(1, 2))
        return a.sum() + b.sum() + c.sum() + d.sum()


def test_handles_by_hand():
    fc = count_flops(_Ops(), (3, 10, 8), batch=2)
    expected = 2 * 3 * 10 * 20 * 24 + 3 * 5 * 6 * 4 + 2 * 3 * 10 * 20 * 8 + 6 * 10 * 8 * 20
    assert fc.total == expected
    assert fc.uncounted == {}
    assert "aten::sum" in fc.ignored


class _Strange(nn.Module):
    def forward(self, x):
        return torch.cdist(x, x)  # distance matrix: no handle, not element-wise


def test_unknown_op_is_reported_not_zeroed():
    fc = count_flops(_Strange(), (1, 5, 4))
    assert fc.uncounted and any("cdist" in op for op in fc.uncounted)
    assert not any("cdist" in op for op in IGNORED_OPS)


def test_failing_size_names_the_layer():
    model = timm.create_model("deit_tiny_patch16_224")  # fixed 224 px patch embedding
    with pytest.raises(NasError, match=r"layer 'patch_embed' \(PatchEmbed\).*112"):
        count_flops(model, (3, 112, 112))


def test_params_per_stage():
    model = build_model(PRESETS["pvt_v2_b0"])
    parts = params_by_part(model)
    assert parts.total == count_params(model) == sum(p.numel() for p in model.parameters())
    assert set(parts.by_part) >= {"stem", "stages.0", "stages.3", "head"}
    assert parts.by_part["stages.2"] == sum(p.numel() for p in model.stages[2].parameters())
    other = timm.create_model("convnext_atto")
    timm_parts = params_by_part(other)
    assert "stages.3" in timm_parts.by_part and timm_parts.total == count_params(other)


def test_core_mixers_all_drawn():
    drawn = {s.mixer for seed in range(40) for s in random_genome(seed).stages}
    assert drawn <= set(CORE_MIXERS) and len(drawn) >= 4


class _BiLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0]


def test_lstm_by_hand():
    fc = count_flops(_BiLSTM(), (10, 16), batch=3)
    per_step = 2 * (4 * 32 * 16 + 4 * 32 * 32) + 2 * (4 * 32 * 64 + 4 * 32 * 32)  # layer 1 + layer 2, both ways
    assert fc.total == 3 * 10 * per_step and fc.uncounted == {}


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "xcit_tiny_12_p16_224", "efficientvit_m0"])
def test_other_timm_attention_models_fully_counted(name):
    """RoPE (EVA-02), cross-covariance attention (XCiT), cascaded group attention (EfficientViT)."""
    fc = count_flops(timm.create_model(name))
    assert fc.uncounted == {} and fc.total > 0
