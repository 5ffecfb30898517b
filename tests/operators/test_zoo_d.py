"""Zoo part D: DCNv3, MViTv2 pooling attention, Swin V2 cosine attention and log-CPB, ConViT's GPSA,
DeepViT's re-attention, focal self-attention, MobileViT, Sparse Transformer patterns, SAN and local
relation. Numerical checks against an existing operator (or timm / torchvision) wherever the new one
reduces to it; the registry-wide contracts live in test_contract.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import operators  # noqa: F401  (fills the registries)
from operators import MIXERS

DIM = 64


# ---------------------------------------------------------------- DCNv3


def test_dcnv3_core_matches_torchvision_deform_conv2d():
    from torchvision.ops import deform_conv2d

    from operators.dcnv3 import dcnv3_sample

    torch.manual_seed(0)
    B, H, W, G, c, K = 2, 6, 7, 4, 3, 3
    C = G * c
    value = torch.randn(B, H, W, C)
    offset = torch.randn(B, H, W, G, K * K, 2) * 1.5  # (x, y), fractional and out of the map at times
    mask = torch.rand(B, H, W, G, K * K)
    ours = dcnv3_sample(value, offset, mask, K)
    # torchvision: (dy, dx) pairs per offset group and kernel point, channels-first; depthwise ones weight
    tv_off = offset.flip(-1).reshape(B, H, W, G * K * K * 2).permute(0, 3, 1, 2)
    tv_mask = mask.reshape(B, H, W, G * K * K).permute(0, 3, 1, 2)
    ref = deform_conv2d(value.permute(0, 3, 1, 2), tv_off, torch.ones(C, 1, K, K), padding=1, mask=tv_mask)
    assert torch.allclose(ours, ref.permute(0, 2, 3, 1), atol=1e-5)


def test_dcnv3_at_init_is_a_box_filter_of_the_projected_values():
    """Zero offsets and zero mask logits (InternImage's init): a 3x3 average with zero padding."""
    torch.manual_seed(0)
    m = MIXERS["dcnv3"](DIM, grid_size=(8, 12))
    x = torch.randn(2, 8, 12, DIM)
    v = m.input_proj(x).permute(0, 3, 1, 2)
    box = F.avg_pool2d(v, 3, 1, 1, count_include_pad=True).permute(0, 2, 3, 1)
    assert torch.allclose(m(x), m.output_proj(box), atol=1e-5)


def test_dcnv3_rejects_bad_knobs():
    with pytest.raises(ValueError, match="groups=5 must be positive and divide the width 64"):
        MIXERS["dcnv3"](DIM, groups=5)
    assert "odd" in MIXERS["dcnv3"].check(DIM, (14, 14), {"kernel_size": 4})


# ---------------------------------------------------------------- MViTv2 pooling attention


@pytest.mark.parametrize("mode,stride", [("conv", 2), ("avg", 2), ("max", 1), ("conv", 4)])
def test_mvit_pool_matches_timm_multiscale_attention(mode, stride):
    from timm.models.mvitv2 import MultiScaleAttention

    grid = (8, 12)
    torch.manual_seed(0)
    ours = MIXERS["mvit_pool"](DIM, grid_size=grid, num_heads=4, kv_stride=stride, pool_mode=mode)
    ref = MultiScaleAttention(DIM, DIM, grid, num_heads=4, mode=mode, kernel_q=(3, 3), kernel_kv=(3, 3),
                              stride_q=(1, 1), stride_kv=(stride, stride), has_cls_token=False, rel_pos_type="",
                              residual_pooling=True)
    ref.load_state_dict(ours.state_dict())  # same parameter names
    x = torch.randn(2, *grid, DIM)
    out, q_size = ref(x.flatten(1, 2), list(grid))
    assert list(q_size) == list(grid)
    assert torch.allclose(ours(x), out.view(2, *grid, DIM), atol=1e-5)


def test_mvit_pool_shrinks_keys_and_values():
    m = MIXERS["mvit_pool"](DIM, grid_size=(8, 12), kv_stride=2)
    q = torch.randn(1, 4, 96, 16)
    assert m._pooled(q, m.pool_k, m.norm_k, 8, 12).shape == (1, 4, 4 * 6, 16)
    assert "pool_mode='lp'" in MIXERS["mvit_pool"].check(DIM, (8, 8), {"pool_mode": "lp"})


def test_dcnv3_keeps_its_zero_offset_init_inside_a_model():
    from search_space import ArchSpec, StageSpec, StemSpec, build_model

    spec = ArchSpec(StemSpec("patchify", 4), (StageSpec(1, 32, "dcnv3", {}),), num_classes=10, img_size=32)
    mixer = next(m for m in build_model(spec).modules() if type(m).__name__ == "DCNv3")
    assert mixer.offset.weight.abs().sum() == 0 and mixer.mask.weight.abs().sum() == 0


# ---------------------------------------------------------------- Swin V2: cosine attention, log-CPB


def _timm_swinv2_window(ours, window):
    from timm.models.swin_transformer_v2 import WindowAttention as TimmWindowAttention

    ref = TimmWindowAttention(DIM, (window, window), num_heads=4)
    with torch.no_grad():
        ref.qkv.weight.copy_(ours.qkv.weight)
        q_b, k_b, v_b = ours.qkv.bias.chunk(3)
        k_b.zero_()  # timm (and the paper) have no key bias
        ref.q_bias.copy_(q_b)
        ref.v_bias.copy_(v_b)
        ref.proj.load_state_dict(ours.proj.state_dict())
        ref.logit_scale.copy_(torch.randn(4, 1, 1))  # some heads past the clamp at log(100)
        ref.logit_scale[0] = 5.0
        ours.pos.logit_scale.copy_(ref.logit_scale)
        ref.cpb_mlp.load_state_dict(ours.pos.cpb_mlp.state_dict())
    return ref


def test_window_cosine_matches_timm_swinv2_window_attention():
    torch.manual_seed(0)
    ours = MIXERS["window_cosine"](DIM, grid_size=(7, 7), num_heads=4, window_size=7)
    ref = _timm_swinv2_window(ours, 7)
    x = torch.randn(2, 7, 7, DIM)
    assert torch.allclose(ours(x), ref(x.view(2, 49, DIM)).view(2, 7, 7, DIM), atol=1e-4)
    # one window of a larger grid is attended on its own: compare the first 7x7 window of 14x14
    x = torch.randn(1, 14, 14, DIM)
    win = ref(x[:, :7, :7].reshape(1, 49, DIM)).view(1, 7, 7, DIM)
    assert torch.allclose(ours(x)[:, :7, :7], win, atol=1e-4)


def test_log_cpb_is_a_function_of_the_offset_and_extrapolates():
    from operators import POS_ENCODINGS

    torch.manual_seed(0)
    enc = POS_ENCODINGS["log_cpb"](dim=DIM, num_heads=4, grid_size=(6, 6))
    b = enc.bias(torch.zeros(1, 4, 36, 16), (6, 6)).view(4, 6, 6, 6, 6)
    assert torch.allclose(b[:, 1:, :, 1:, :], b[:, :-1, :, :-1, :])  # shift in y: same offsets, same bias
    assert torch.allclose(b[:, :, 1:, :, 1:], b[:, :, :-1, :, :-1])
    assert (b > 0).all() and (b < 16).all()
    # another grid: offsets within the built range keep their values (normalised by the built size)
    b2 = enc.bias(torch.zeros(1, 4, 80, 16), (8, 10)).view(4, 8, 10, 8, 10)
    assert torch.allclose(b2[:, 2, 3, 4, 1], b[:, 2, 3, 4, 1])


def test_log_cpb_is_accepted_by_window_and_global_attention():
    assert "log_cpb" in MIXERS["attention"].supported_pos and "log_cpb" in MIXERS["window"].supported_pos
    torch.manual_seed(0)
    m = MIXERS["attention"](DIM, grid_size=(8, 12), pos_encoding="log_cpb")
    x = torch.randn(2, 8, 12, DIM)
    plain = MIXERS["attention"](DIM, grid_size=(8, 12))
    plain.load_state_dict(m.state_dict(), strict=False)
    assert not torch.allclose(m(x), plain(x), atol=1e-3)  # the bias changes the result


# ---------------------------------------------------------------- ConViT GPSA, DeepViT re-attention


def test_gpsa_matches_timm_convit_gpsa():
    from timm.models.convit import GPSA

    torch.manual_seed(0)
    ours = MIXERS["gpsa"](DIM, grid_size=(7, 7), num_heads=4, locality_strength=1.0)
    ref = GPSA(DIM, num_heads=4, locality_strength=1.0)
    ref.local_init()  # timm's ConViT calls it from the model; it writes the same positional weights
    assert torch.allclose(ref.pos_proj.weight, ours.pos_proj.weight)
    with torch.no_grad():
        ours.gating_param.copy_(torch.tensor([-2.0, 0.0, 1.0, 3.0]))
        ours.pos_proj.bias.copy_(torch.randn(4))
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 7, 7, DIM)
    assert torch.allclose(ours(x), ref(x.view(2, 49, DIM)).view(2, 7, 7, DIM), atol=1e-5)


def test_gpsa_with_closed_gate_is_global_attention():
    torch.manual_seed(0)
    g = MIXERS["gpsa"](DIM, grid_size=(8, 12), qkv_bias=True)
    with torch.no_grad():
        g.gating_param.fill_(-30.0)  # sigmoid -> 0: content attention only
    a = MIXERS["attention"](DIM, grid_size=(8, 12))
    with torch.no_grad():
        a.qkv.weight.copy_(torch.cat([g.qk.weight, g.v.weight]))
        a.qkv.bias.copy_(torch.cat([g.qk.bias, g.v.bias]))
        a.proj.load_state_dict(g.proj.state_dict())
    x = torch.randn(2, 8, 12, DIM)
    assert torch.allclose(g(x), a(x), atol=1e-5)


def test_gpsa_open_gate_attends_locally_at_init():
    """Each head's positional weights peak at its own offset of a 3x3 square (9 heads: local init)."""
    torch.manual_seed(0)
    g = MIXERS["gpsa"](72, grid_size=(9, 9), num_heads=9, locality_strength=4.0)
    logits = g.pos_proj(g.rel).permute(2, 0, 1)  # (heads, N, N)
    centre = 4 * 9 + 4
    peaks = logits[:, centre].argmax(-1)  # key index of the strongest weight per head
    offsets = {(int(p) % 9 - 4, int(p) // 9 - 4) for p in peaks}  # (dx, dy)
    assert offsets == {(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}


def test_reattention_with_identity_theta_is_global_attention_in_eval():
    torch.manual_seed(0)
    r = MIXERS["reattention"](DIM, grid_size=(8, 12), qkv_bias=True).eval()  # fresh BN: mean 0, var 1
    a = MIXERS["attention"](DIM, grid_size=(8, 12))
    a.load_state_dict({k: v for k, v in r.state_dict().items() if k.startswith(("qkv", "proj"))})
    x = torch.randn(2, 8, 12, DIM)
    eps = r.var_norm.eps
    assert torch.allclose(r(x), a(x.clone()) / (1 + eps) ** 0.5 + r.proj.bias * (1 - (1 + eps) ** -0.5), atol=1e-5)


def test_reattention_mixes_heads():
    torch.manual_seed(0)
    r = MIXERS["reattention"](DIM, grid_size=(6, 6)).eval()
    x = torch.randn(1, 6, 6, DIM)
    y0 = r(x)
    with torch.no_grad():
        r.reatten_weight.copy_(torch.ones(4, 4) / 4)  # every head gets the mean map
        y1 = r(x)
        r.qkv.weight[:16].mul_(2)  # change head 0's queries only: every head's output moves
        y2 = r(x)
    assert not torch.allclose(y0, y1, atol=1e-4)
    d = (y2 - y1).view(1, 36, DIM) @ torch.linalg.pinv(r.proj.weight).T
    assert (d.view(1, 36, 4, 16).abs().amax(dim=(0, 1, 3)) > 1e-4).all()


# ---------------------------------------------------------------- focal self-attention


def _focal_reference(m, x):
    """Focal self-attention by its definition, one query at a time (slow; the test's ground truth)."""
    B, H, W, C = x.shape
    w, e, f, h = m.window, m.expand, m.focal_window, m.num_heads
    d = C // h
    q, k, v = m.qkv(x).split(C, dim=-1)  # (B, H, W, C) each
    nh, nw = -(-H // w), -(-W // w)
    pooled_k = torch.zeros(B, nh, nw, C)
    pooled_v = torch.zeros(B, nh, nw, C)
    for i in range(nh):
        for j in range(nw):
            pooled_k[:, i, j] = k[:, i * w:(i + 1) * w, j * w:(j + 1) * w].mean(dim=(1, 2))
            pooled_v[:, i, j] = v[:, i * w:(i + 1) * w, j * w:(j + 1) * w].mean(dim=(1, 2))
    out = torch.zeros(B, H, W, C)
    for y in range(H):
        for x_ in range(W):
            i, j = y // w, x_ // w
            keys, vals = [], []
            for yy in range(i * w - e, (i + 1) * w + e):
                for xx in range(j * w - e, (j + 1) * w + e):
                    if 0 <= yy < H and 0 <= xx < W:
                        keys.append(k[:, yy, xx])
                        vals.append(v[:, yy, xx])
            for ii in range(i - f // 2, i + f // 2 + 1):
                for jj in range(j - f // 2, j + f // 2 + 1):
                    if 0 <= ii < nh and 0 <= jj < nw:
                        keys.append(pooled_k[:, ii, jj])
                        vals.append(pooled_v[:, ii, jj])
            K = torch.stack(keys, 1).view(B, -1, h, d)
            V = torch.stack(vals, 1).view(B, -1, h, d)
            Q = q[:, y, x_].view(B, h, d)
            a = torch.einsum("bhd,blhd->bhl", Q, K) / d ** 0.5
            out[:, y, x_] = torch.einsum("bhl,blhd->bhd", a.softmax(-1), V).reshape(B, C)
    return m.proj(out)


@pytest.mark.parametrize("grid,window,expand,focal", [((6, 9), 3, 1, 3), ((7, 10), 3, 2, 3), ((8, 8), 4, 0, 1)])
def test_focal_attention_matches_its_definition(grid, window, expand, focal):
    torch.manual_seed(0)
    m = MIXERS["focal_attention"](DIM, grid_size=grid, window_size=window, expand_size=expand, focal_window=focal)
    x = torch.randn(2, *grid, DIM)
    with torch.no_grad():
        assert torch.allclose(m(x), _focal_reference(m, x), atol=1e-5)


# ---------------------------------------------------------------- MobileViT


def test_mobilevit_is_timms_block_with_silu():
    from timm.models import create_model

    torch.manual_seed(0)
    m = MIXERS["mobilevit"](96, grid_size=(8, 12), num_heads=4, transformer_dim=144)
    # the block timm builds inside MobileViT-S (stage 3: 96 channels, transformer width 144)
    net = create_model("mobilevit_s", pretrained=False)
    ref = net.stages[2][1]
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
    ref.load_state_dict(m.block.state_dict())
    x = torch.randn(2, 8, 12, 96)
    m.eval(), ref.eval()
    assert torch.allclose(m(x), ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), atol=1e-5)
    assert isinstance(m.block.conv_kxk.bn.act, torch.nn.SiLU) or isinstance(m.block.conv_kxk.act, torch.nn.SiLU)


def test_mobilevit_resizes_grids_the_patch_does_not_divide():
    m = MIXERS["mobilevit"](DIM, grid_size=(7, 7), patch_size=2)
    assert m(torch.randn(1, 7, 9, DIM)).shape == (1, 7, 9, DIM)
    assert "patch_size=8" in MIXERS["mobilevit"].check(DIM, (7, 7), {"patch_size": 8})


# ---------------------------------------------------------------- Sparse Transformer patterns


def _as_global(m, grid):
    a = MIXERS["attention"](DIM, grid_size=grid)
    a.load_state_dict(m.state_dict())
    return a


@pytest.mark.parametrize("name,knobs", [("sparse_strided", {"stride": 1}), ("sparse_fixed", {"block": 1})])
def test_sparse_pattern_that_covers_every_key_is_global_attention(name, knobs):
    torch.manual_seed(0)
    m = MIXERS[name](DIM, grid_size=(8, 12), **knobs)
    assert bool(m.allowed(8, 12).all())
    x = torch.randn(2, 8, 12, DIM)
    assert torch.allclose(m(x), _as_global(m, (8, 12))(x), atol=1e-5)


def test_sparse_patterns_on_a_grid():
    from operators.sparse_transformer import fixed_pattern, strided_pattern

    a1, a2 = strided_pattern(12, 4)  # a 3x4 grid, stride = row width
    assert a1[5].nonzero().flatten().tolist() == [2, 3, 4, 5, 6, 7, 8]  # |i - j| < 4
    assert a2[5].nonzero().flatten().tolist() == [1, 5, 9]  # the column of token 5
    f1, f2 = fixed_pattern(12, 4, 1)
    assert f1[5].nonzero().flatten().tolist() == [4, 5, 6, 7]  # its row (block)
    assert f2[5].nonzero().flatten().tolist() == [3, 7, 11]  # the last token of every row
    m = MIXERS["sparse_fixed"](DIM, grid_size=(3, 4), combine="heads", num_heads=4)
    allowed = m.allowed(3, 4)
    assert torch.equal(allowed[0], f1) and torch.equal(allowed[1], f2) and torch.equal(allowed[2], f1)
    odd = MIXERS["sparse_strided"](DIM, grid_size=(3, 4), combine="interleave", block_index=1)
    assert torch.equal(odd.allowed(3, 4)[0], a2)


@pytest.mark.parametrize("combine", ["union", "heads"])
def test_sparse_attention_equals_masked_softmax(combine):
    torch.manual_seed(0)
    m = MIXERS["sparse_strided"](DIM, grid_size=(6, 5), combine=combine)
    x = torch.randn(2, 6, 5, DIM)
    q, k, v = m.qkv(x).view(2, 30, 3, 4, 16).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-1, -2)) / 4.0
    logits = logits.masked_fill(~m.allowed(6, 5), float("-inf"))
    ref = m.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 30, DIM)).view(2, 6, 5, DIM)
    assert torch.allclose(m(x), ref, atol=1e-5)
    assert not torch.allclose(m(x), _as_global(m, (6, 5))(x), atol=1e-3)


# ---------------------------------------------------------------- SAN patchwise, local relation


def test_san_patch_with_uniform_weights_is_a_reflection_padded_box_filter():
    torch.manual_seed(0)
    m = MIXERS["san_patch"](DIM, grid_size=(8, 12), kernel_size=5)
    with torch.no_grad():
        m.conv_w[-1].weight.zero_()
        m.conv_w[-1].bias.fill_(1 / 25)
    x = torch.randn(2, 8, 12, DIM)
    v = F.pad(m.conv3(x).permute(0, 3, 1, 2), (2, 2, 2, 2), mode="reflect")
    assert torch.allclose(m(x), F.avg_pool2d(v, 5, 1).permute(0, 2, 3, 1), atol=1e-5)


def test_san_patch_matches_its_definition_at_one_position():
    torch.manual_seed(0)
    m = MIXERS["san_patch"](DIM, grid_size=(6, 7), kernel_size=3, share_planes=4).eval()
    with torch.no_grad():
        for bn in (m.conv_w[0], m.conv_w[3]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 6, 7, DIM)
    y, i, j = m(x), 0, 4  # a border position: the footprint reflects row -1 to row 1
    rows, cols = [1, 0, 1], [3, 4, 5]
    q = m.conv1(x[0, i, j])
    keys = torch.stack([m.conv2(x[0, r, c]) for r in rows for c in cols])  # (9, r), footprint row-major
    feat = torch.cat([q, keys.T.reshape(-1)])  # channel-major, as the unfold
    w = m.conv_w(feat[None, :, None])[0, :, 0].view(DIM // 4, 9)  # (wc, 9)
    vals = torch.stack([m.conv3(x[0, r, c]) for r in rows for c in cols])  # (9, C)
    ref = (vals.T * w.repeat(4, 1)).sum(-1)  # channel c uses weight c mod wc
    assert torch.allclose(y[0, i, j], ref, atol=1e-5)


def test_local_relation_without_relation_or_geometry_is_an_average_over_the_neighbourhood():
    torch.manual_seed(0)
    m = MIXERS["local_relation"](DIM, grid_size=(8, 12), kernel_size=5)
    with torch.no_grad():
        m.qk.weight.zero_(), m.qk.bias.zero_()
        m.geometry[-1].weight.zero_(), m.geometry[-1].bias.zero_()
    x = torch.randn(2, 8, 12, DIM)
    v = m.value(x).permute(0, 3, 1, 2)
    box = F.avg_pool2d(v, 5, 1, 2, count_include_pad=False).permute(0, 2, 3, 1)  # neighbours inside the map
    assert torch.allclose(m(x), m.proj(box), atol=1e-5)


def test_local_relation_matches_its_definition_at_one_position():
    torch.manual_seed(0)
    m = MIXERS["local_relation"](DIM, grid_size=(6, 7), kernel_size=3, groups=4)
    x = torch.randn(1, 6, 7, DIM)
    y, i, j = m(x), 5, 0  # a corner: 4 neighbours inside the map
    qk = m.qk(x[0])  # (H, W, 2m)
    v = m.value(x[0])
    logits, vals = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            r, c = i + dy, j + dx
            if 0 <= r < 6 and 0 <= c < 7:
                g = m.geometry(torch.tensor([float(dx), float(dy)]))
                logits.append(-(qk[i, j, :4] - qk[r, c, 4:]) ** 2 + g)
                vals.append(v[r, c])
    a = torch.stack(logits).softmax(0)  # (n, m)
    ref = (torch.stack(vals).view(-1, 4, DIM // 4) * a[:, :, None]).sum(0).reshape(DIM)
    assert torch.allclose(y[0, i, j], m.proj(ref), atol=1e-5)
