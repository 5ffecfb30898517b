"""Zoo part A: parity with the timm modules we wrap, and numerical identities of the mixers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers.halo_attn import HaloAttn
from timm.layers.lambda_layer import LambdaLayer
from timm.models.efficientvit_mit import EfficientVitBlock
from timm.models.mobilevit import MobileVitV2Block

from operators import MIXERS, POS_ENCODINGS
from operators.attention import ATTN_POS, GlobalAttention
from operators.spatial_reduction import SpatialReductionAttention
from operators.window_attention import WindowAttention

DIM = 64
ZOO_A = ["twins_lsa", "twins_gsa", "cswin", "axial", "halo", "neighborhood", "performer", "linformer",
         "relu_linear", "additive", "separable", "lambda"]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def build(name: str, grid: tuple[int, int], pos: str = "none", **knobs):
    return MIXERS.get(name)(DIM, grid_size=grid, pos_encoding=pos, block_index=0, **knobs)


def test_zoo_a_is_registered():
    assert set(ZOO_A) <= set(MIXERS.names())
    assert POS_ENCODINGS.get("lepe").placement == "attention"
    assert "lepe" in ATTN_POS  # global and window attention accept LePE


# ---- wrapped timm modules: parameters agree ------------------------------------------------

def test_halo_wraps_timm_halo_attn():
    ours = build("halo", (8, 12), num_heads=4, block_size=4, halo_size=2)
    ref = HaloAttn(DIM, DIM, num_heads=4, block_size=4, halo_size=2)
    assert n_params(ours) == n_params(ref) + DIM * DIM + DIM  # + our output projection
    ours.attn.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 12, DIM)
    expect = ours.proj(ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    torch.testing.assert_close(ours(x), expect)


def test_lambda_wraps_timm_lambda_layer():
    ours = build("lambda", (7, 7), num_heads=4, dim_head=16, r=9)
    ref = LambdaLayer(DIM, DIM, num_heads=4, dim_head=16, r=9)
    assert n_params(ours) == n_params(ref) + DIM * DIM + DIM


def test_relu_linear_matches_efficientvit_block_attention():
    ours = build("relu_linear", (8, 12), head_dim=16).eval()
    ref = EfficientVitBlock(DIM, head_dim=16).context_module.main.eval()  # the LiteMLA of EfficientViT
    assert n_params(ours) == n_params(ref)
    ours.attn.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 12, DIM)
    torch.testing.assert_close(ours(x), ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def test_separable_matches_mobilevitv2_attention():
    ours = build("separable", (8, 12), patch_size=1)
    ref = MobileVitV2Block(DIM, transformer_dim=DIM, transformer_depth=1).transformer[0].attn
    assert n_params(ours) == n_params(ref)
    # patch 1: one softmax over all tokens; check against the paper's formula on our layout
    x = torch.randn(2, 8, 12, DIM)
    w, b = ours.attn.qkv_proj.weight.flatten(1), ours.attn.qkv_proj.bias
    q, k, v = F.linear(x, w, b).split([1, DIM, DIM], dim=-1)
    ctx = (k * q.flatten(1, 2).softmax(1).view_as(q)).sum((1, 2), keepdim=True)  # (B, 1, 1, C)
    expect = F.linear(F.relu(v) * ctx, ours.attn.out_proj.weight.flatten(1), ours.attn.out_proj.bias)
    torch.testing.assert_close(ours(x), expect, rtol=1e-4, atol=1e-5)


# ---- numerical identities --------------------------------------------------------------------

@pytest.mark.parametrize("pos", ["none", "rel_bias"])
def test_neighborhood_covering_the_grid_is_global_attention(pos):
    torch.manual_seed(0)
    nat = build("neighborhood", (7, 7), pos, kernel_size=7)
    glob = GlobalAttention(DIM, grid_size=(7, 7), pos_encoding=pos, num_heads=4)
    glob.load_state_dict(nat.state_dict())
    x = torch.randn(2, 7, 7, DIM)
    torch.testing.assert_close(nat(x), glob(x), rtol=1e-4, atol=1e-5)


def test_dilated_neighborhood_sees_only_its_dilation_class():
    nat = build("neighborhood", (8, 8), kernel_size=3, dilation=2)
    x = torch.randn(1, 8, 8, DIM, requires_grad=True)
    nat(x)[0, 3, 5].sum().backward()  # an odd row, odd column query
    touched = x.grad[0].abs().sum(-1) > 0  # (8, 8)
    rows, cols = touched.nonzero().T
    assert (rows % 2 == 1).all() and (cols % 2 == 1).all()
    assert touched.sum() == 9  # a 3x3 neighbourhood, clamped inside the map


def test_neighborhood_rejects_a_kernel_larger_than_the_map():
    why = MIXERS.get("neighborhood").check(DIM, (7, 7), {"kernel_size": 5, "dilation": 2})
    assert why and "exceeds" in why
    with pytest.raises(ValueError, match="exceeds"):
        build("neighborhood", (7, 7), kernel_size=9)


def test_axial_on_a_column_grid_is_global_attention_over_the_column():
    torch.manual_seed(0)
    ax = build("axial", (9, 1))
    with torch.no_grad():  # row pass over one token returns its value: make that the identity
        ax.qkv_row.weight[2 * DIM:] = torch.eye(DIM)
        ax.qkv_row.bias[2 * DIM:] = 0
    glob = GlobalAttention(DIM, grid_size=(9, 1), num_heads=4)
    glob.qkv.load_state_dict(ax.qkv_col.state_dict())
    glob.proj.load_state_dict(ax.proj.state_dict())
    x = torch.randn(2, 9, 1, DIM)
    torch.testing.assert_close(ax(x), glob(x), rtol=1e-4, atol=1e-5)


def test_cswin_with_stripes_covering_the_map_is_global_attention_plus_lepe():
    torch.manual_seed(0)
    cs = build("cswin", (7, 7), num_heads=4, split_size=7)
    with torch.no_grad():
        for conv in (cs.lepe_h.conv, cs.lepe_v.conv):
            conv.weight.zero_()
            conv.bias.zero_()
    glob = GlobalAttention(DIM, grid_size=(7, 7), num_heads=4)
    glob.qkv.load_state_dict(cs.qkv.state_dict())
    glob.proj.load_state_dict(cs.proj.state_dict())
    x = torch.randn(2, 7, 7, DIM)
    torch.testing.assert_close(cs(x), glob(x), rtol=1e-4, atol=1e-5)


def test_cswin_rejects_odd_heads():
    assert "even" in MIXERS.get("cswin").check(DIM, (14, 14), {"num_heads": 1})


def test_lepe_adds_a_depthwise_conv_of_the_values():
    torch.manual_seed(0)
    with_lepe = GlobalAttention(DIM, grid_size=(8, 12), pos_encoding="lepe", num_heads=4)
    plain = GlobalAttention(DIM, grid_size=(8, 12), num_heads=4)
    plain.load_state_dict(with_lepe.state_dict(), strict=False)
    x = torch.randn(2, 8, 12, DIM)
    v = F.linear(x, with_lepe.qkv.weight[2 * DIM:], with_lepe.qkv.bias[2 * DIM:])  # (B, H, W, C)
    lepe = with_lepe.pos.conv(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    expect = plain(x) + lepe @ with_lepe.proj.weight.T
    torch.testing.assert_close(with_lepe(x), expect, rtol=1e-4, atol=1e-5)


def test_twins_lsa_never_shifts_and_gsa_is_pvt_sra():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, DIM)
    lsa = MIXERS.get("twins_lsa")(DIM, grid_size=(8, 12), pos_encoding="none", block_index=1)
    win = WindowAttention(DIM, grid_size=(8, 12), block_index=1, shift=False)
    win.load_state_dict(lsa.state_dict())
    torch.testing.assert_close(lsa(x), win(x))
    gsa = MIXERS.get("twins_gsa")(DIM, grid_size=(8, 12), pos_encoding="none", block_index=0)
    sra = SpatialReductionAttention(DIM, grid_size=(8, 12))
    sra.load_state_dict(gsa.state_dict())
    torch.testing.assert_close(gsa(x), sra(x))


def test_performer_approximates_softmax_attention_and_redraws_only_on_request():
    torch.manual_seed(0)
    perf = build("performer", (7, 7), num_features=8192)
    glob = GlobalAttention(DIM, grid_size=(7, 7), num_heads=4)
    glob.load_state_dict({k: v for k, v in perf.state_dict().items() if k != "features"})
    x = torch.randn(2, 7, 7, DIM) * 0.5
    with torch.no_grad():
        approx, exact = perf(x), glob(x)
        assert (approx - exact).norm() / exact.norm() < 0.01
        assert torch.equal(perf(x), approx)  # fixed features: same output in train mode too
        before = perf.features.clone()
        perf.redraw_features()
        assert not torch.equal(perf.features, before)
    assert "features" in perf.state_dict()


def test_linformer_names_the_grid_it_was_built_for():
    lin = build("linformer", (14, 14))
    with pytest.raises(ValueError, match=r"built for 14x14 = 196 tokens, got 8x12"):
        lin(torch.randn(1, 8, 12, DIM))
    why = MIXERS.get("linformer").check(DIM, (7, 7), {"proj_len": 64})
    assert why and "49" in why


@pytest.mark.parametrize("name,knobs,match", [
    ("lambda", {"r": 4}, "odd"),
    ("lambda", {"num_heads": 3}, "divide"),
    ("halo", {"block_size": 16}, "larger"),
    ("relu_linear", {"head_dim": 24}, "divide"),
    ("separable", {"patch_size": 9}, "between"),
])
def test_knob_rules_are_checked(name, knobs, match):
    why = MIXERS.get(name).check(DIM, (8, 12), knobs)
    assert why is not None and match in why
    with pytest.raises(ValueError, match=match):
        build(name, (8, 12), **knobs)
