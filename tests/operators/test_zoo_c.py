"""Zoo part C: attention-internal position encodings (RoPE, LeViT bias, iRPE), the T2T stem and
channel attention (SE, ECA, CBAM). The registry-wide contracts live in test_contract.py."""

from __future__ import annotations

import pytest
import torch
from timm.layers import EcaModule, SEModule
from timm.layers.cbam import CbamModule

import operators  # noqa: F401  (fills the registries)
from operators import CHANNEL_ATTNS, MIXERS, POS_ENCODINGS, STEMS
from operators.attention import ATTN_POS
from operators.pos_irpe import piecewise_index

DIM, HEADS = 64, 4
D = DIM // HEADS


def _enc(name, grid):
    torch.manual_seed(0)
    return POS_ENCODINGS.get(name)(dim=DIM, num_heads=HEADS, grid_size=grid)


def test_new_encodings_are_attention_encodings_accepted_by_attention_and_window():
    for name in ("rope_axial", "rope_mixed", "levit_bias", "irpe"):
        assert POS_ENCODINGS.get(name).placement == "attention"
        assert name in ATTN_POS
        assert name in MIXERS.get("attention").supported_pos and name in MIXERS.get("window").supported_pos


# ---------------------------------------------------------------- RoPE


@pytest.mark.parametrize("name", ["rope_axial", "rope_mixed"])
@pytest.mark.parametrize("grid", [(6, 6), (5, 7)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_rope_preserves_norms(name, grid):
    enc = _enc(name, (6, 6))  # (5, 7) exercises the recomputed (non-cached) path
    n = grid[0] * grid[1]
    q, k = torch.randn(2, HEADS, n, D), torch.randn(2, HEADS, n, D)
    qr, kr = enc.rotate(q, k, grid)
    assert torch.allclose(qr.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    assert torch.allclose(kr.norm(dim=-1), k.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(qr, q)  # it does rotate (all but the token at (0, 0))
    assert torch.allclose(qr[:, :, 0], q[:, :, 0], atol=1e-6)  # position (0, 0): angle zero


@pytest.mark.parametrize("name", ["rope_axial", "rope_mixed"])
def test_rope_logits_depend_only_on_relative_offset(name):
    """Shift equivariance: with the same q and k content everywhere, the logit between
    positions p and p' equals the logit between p + s and p' + s for any shift s."""
    h, w = 5, 6
    enc = _enc(name, (h, w))
    q = torch.randn(1, HEADS, 1, D).expand(1, HEADS, h * w, D)
    k = torch.randn(1, HEADS, 1, D).expand(1, HEADS, h * w, D)
    qr, kr = enc.rotate(q, k, (h, w))
    logits = (qr @ kr.transpose(-1, -2)).view(HEADS, h, w, h, w)
    assert torch.allclose(logits[:, 1:, :, 1:, :], logits[:, :-1, :, :-1, :], atol=1e-4)  # shift in y
    assert torch.allclose(logits[:, :, 1:, :, 1:], logits[:, :, :-1, :, :-1], atol=1e-4)  # shift in x
    # ... and the logits do depend on the offset (both axes), unlike without RoPE
    assert not torch.allclose(logits[:, 0, 0, 0, 0], logits[:, 0, 0, 0, 3], atol=1e-3)
    assert not torch.allclose(logits[:, 0, 0, 0, 0], logits[:, 0, 0, 3, 0], atol=1e-3)


def test_rope_mixed_frequencies_are_learned_per_head():
    enc = _enc("rope_mixed", (4, 4))
    assert enc.freqs.shape == (2, HEADS, D // 2)
    assert not torch.allclose(enc.freqs[:, 0], enc.freqs[:, 1])
    q, k = torch.randn(2, HEADS, 16, D), torch.randn(2, HEADS, 16, D)
    qr, kr = enc.rotate(q, k, (4, 4))
    (qr @ kr.transpose(-1, -2)).square().sum().backward()
    assert enc.freqs.grad is not None and enc.freqs.grad.abs().sum() > 0


def test_rope_rejects_head_width_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        POS_ENCODINGS.get("rope_axial")(dim=24, num_heads=4, grid_size=(4, 4))  # head width 6


# ---------------------------------------------------------------- LeViT bias


@pytest.mark.parametrize("grid", [(5, 5), (4, 6), (7, 3)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_levit_bias_is_symmetric_in_offset_sign(grid):
    enc = _enc("levit_bias", (5, 5))
    with torch.no_grad():
        enc.table.normal_()  # LeViT starts from zeros; make every entry distinct
    h, w = grid
    bias = enc.bias(torch.zeros(1, HEADS, h * w, D), grid)
    assert bias.shape == (1, HEADS, h * w, h * w)
    b = bias[0].view(HEADS, h, w, h, w)  # [head, y_i, x_i, y_j, x_j]
    assert torch.equal(b, b.permute(0, 3, 4, 1, 2))  # (dy, dx) -> (-dy, -dx)
    assert torch.equal(b, b.permute(0, 1, 4, 3, 2))  # (dy, dx) -> (dy, -dx): swap x_i and x_j
    assert torch.equal(b, b.permute(0, 3, 2, 1, 4))  # (dy, dx) -> (-dy, dx)
    assert not torch.allclose(b[:, 0, 0, 0, 0], b[:, 0, 0, 0, 1])  # but it does depend on |dx|


# ---------------------------------------------------------------- iRPE


def test_irpe_piecewise_buckets():
    rel = torch.arange(-20, 21)
    idx = piecewise_index(rel, 1.9, 3.8, 15.2)
    assert idx[20 - 1: 20 + 2].tolist() == [-1, 0, 1]  # exact near zero
    assert idx.abs().max() == 3 and idx[-1] == 3 and idx[0] == -3  # clipped at int(beta)
    assert torch.equal(idx, -idx.flip(0))  # odd function
    assert (idx.diff() >= 0).all()  # monotone


@pytest.mark.parametrize("grid", [(6, 6), (4, 9)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_irpe_bias_matches_naive_definition_and_trains_its_table(grid):
    enc = _enc("irpe", (6, 6))
    h, w = grid
    q = torch.randn(2, HEADS, h * w, D, requires_grad=True)
    bias = enc.bias(q, grid)  # (B, heads, N, N)
    index = enc._buckets(grid)  # (N, N)
    naive = torch.einsum("bhid,ijd->bhij", q * D ** -0.5, enc.table[index])  # q_i . r_{b(i,j)}
    assert torch.allclose(bias, naive, atol=1e-5)
    bias.square().sum().backward()
    assert enc.table.grad is not None and enc.table.grad.abs().sum() > 0
    assert q.grad is not None and q.grad.abs().sum() > 0  # contextual: depends on the query


def test_irpe_reaches_table_through_a_mixer():
    m = MIXERS.get("window")(DIM, grid_size=(8, 8), pos_encoding="irpe", block_index=1, num_heads=HEADS,
                             window_size=4)
    m(torch.randn(2, 8, 8, DIM)).square().mean().backward()
    assert m.pos.table.grad is not None and m.pos.table.grad.abs().sum() > 0


@pytest.mark.parametrize("pos", ["rope_axial", "rope_mixed", "levit_bias", "irpe"])
def test_encodings_change_the_output_and_work_on_a_new_grid(pos):
    torch.manual_seed(0)
    plain = MIXERS.get("attention")(DIM, grid_size=(6, 6), num_heads=HEADS)
    torch.manual_seed(0)
    enc = MIXERS.get("attention")(DIM, grid_size=(6, 6), pos_encoding=pos, num_heads=HEADS)
    if pos == "levit_bias":
        with torch.no_grad():
            enc.pos.table.normal_()
    x = torch.randn(1, 6, 6, DIM)
    assert not torch.allclose(plain(x), enc(x), atol=1e-4)
    assert enc(torch.randn(1, 9, 5, DIM)).shape == (1, 9, 5, DIM)


# ---------------------------------------------------------------- T2T stem


@pytest.mark.parametrize("patch", [4, 8, 16])
def test_t2t_stem_total_stride(patch):
    stem = STEMS.get("t2t")(3, 32, patch_size=patch, token_dim=16)
    y = stem(torch.randn(2, 3, 64, 96))
    assert y.shape == (2, 64 // patch, 96 // patch, 32)
    assert len(stem.splits) == 1 + {4: 0, 8: 1, 16: 2}[patch]  # overlapping soft splits
    assert stem.splits[0].unfold.kernel_size == 7 and stem.splits[0].unfold.stride == 4


def test_t2t_stem_performer_variant():
    if "performer" not in MIXERS:
        pytest.skip("the performer mixer is not registered in this checkout")
    stem = STEMS.get("t2t")(3, 32, patch_size=8, token_dim=16, token_mixer="performer")
    assert stem.transformers[0].block.mixer.registry_name == "performer"
    stem(torch.randn(1, 3, 32, 48)).mean().backward()


def test_t2t_stem_rejects_unsupported_patch_sizes():
    cls = STEMS.get("t2t")
    for bad in (2, 12, 64):
        assert "patch_size" in cls.check(bad, {})
    assert cls.check(16, {}) is None
    assert "token_mixer" in cls.check(16, {"token_mixer": "window"})
    with pytest.raises(ValueError, match="t2t stem"):
        cls(3, 32, patch_size=6)


def test_t2t_stem_in_a_model_validates_and_runs():
    from search_space import ArchSpec, build_model
    from search_space.genome import StageSpec, StemSpec

    spec = ArchSpec(stem=StemSpec("t2t", 8, (("token_dim", 16),)),
                    stages=(StageSpec(1, 32, "attention", (("num_heads", 4),), pos="rope_mixed", channel_attn="eca"),
                            StageSpec(1, 64, "window", (("num_heads", 4), ("window_size", 2)), pos="irpe",
                                      downsample="patch_merging", channel_attn="cbam")),
                    num_classes=5, img_size=32)
    spec.validate()
    model = build_model(spec)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


# ---------------------------------------------------------------- channel attention

TIMM_CHANNEL_ATTN = {"se": SEModule, "eca": EcaModule, "cbam": CbamModule}


@pytest.mark.parametrize("name", ["se", "eca", "cbam"])
def test_channel_attention_equals_timm_module_on_nchw(name):
    m = CHANNEL_ATTNS.get(name)(DIM).eval()
    assert isinstance(m.attn, TIMM_CHANNEL_ATTN[name])
    x = torch.randn(2, 5, 7, DIM)
    with torch.no_grad():
        ref = m.attn(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        assert torch.allclose(m(x), ref, atol=1e-6)


@pytest.mark.parametrize("name", ["se", "eca"])
def test_channel_attention_gates_each_channel(name):
    m = CHANNEL_ATTNS.get(name)(DIM)
    x = torch.randn(2, 5, 7, DIM).abs() + 0.1
    gate = m(x) / x  # SE/ECA scale each (sample, channel) by one sigmoid value
    assert ((gate > 0) & (gate < 1)).all()
    assert torch.allclose(gate, gate[:, :1, :1, :].expand_as(gate), atol=1e-5)


def test_block_applies_channel_attention():
    blk = operators.UnifiedBlock(DIM, token_mixer=MIXERS["pool"], grid_size=(4, 4),
                                  channel_attn_layer=CHANNEL_ATTNS["se"])
    assert isinstance(blk.channel_attn, CHANNEL_ATTNS.get("se"))
    x = torch.randn(2, 4, 4, DIM)
    blk(x).mean().backward()
    assert all(p.grad is not None for p in blk.channel_attn.parameters())


# ---------------------------------------------------------------- the mixer benchmark's memory probe


def test_benchmark_memory_probe_sees_the_explicit_attention_matrix():
    """benchmarks/mixers.py measures peak memory from the profiler's allocation events: the
    explicit softmax(QK^T) must show its (B, heads, N, N) matrices, the fused kernel must not."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mixers.py"
    spec = importlib.util.spec_from_file_location("bench_mixers", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    shape = bench.Shape(2, 24, 24, 64)
    x, g = torch.randn(*shape.tuple, requires_grad=True), torch.randn(*shape.tuple)
    fused, _ = bench.build("attention", shape)
    explicit, _ = bench.build(bench.EXPLICIT, shape)
    matrix = 2 * 2 * 576 * 576 * 4  # B * heads * N * N float32 bytes (head width 32 -> 2 heads)
    peak_fused, kernels = bench.peak_memory(fused, x, g)
    peak_explicit, _ = bench.peak_memory(explicit, x, g)
    assert peak_explicit >= 2 * matrix  # logits and probabilities are both alive for backward
    assert peak_fused < matrix
    assert any("scaled_dot_product" in k for k in kernels)
