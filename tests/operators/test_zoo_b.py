"""Zoo part B: parameter parity with the timm modules wrapped or mirrored, and cheap numerical checks.

The registry-wide shape/gradient/determinism contract lives in test_contract.py; these tests pin
down what each operator computes.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from operators import MIXERS
from operators.attention import GlobalAttention

DIM = 64
ZOO_B = ["outlook", "conv_proj", "maxvit_block", "maxvit_grid", "xca", "focal_modulation", "shuffle_window",
         "talking_heads", "lsh", "longformer", "shift", "lka"]


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _build(name: str, grid=(14, 14), block_index: int = 0, pos: str = "none", **knobs):
    torch.manual_seed(0)
    return MIXERS.get(name)(DIM, grid_size=grid, pos_encoding=pos, block_index=block_index, **knobs).eval()


def test_all_registered():
    missing = [n for n in ZOO_B if n not in MIXERS]
    assert not missing


# --- wrapped timm modules: same parameters, same function ---------------------------------


def test_outlook_matches_timm_volo():
    from timm.models.volo import OutlookAttention

    m = _build("outlook", num_heads=4, kernel_size=3, stride=2)
    ref = OutlookAttention(DIM, 4, kernel_size=3, padding=1, stride=2).eval()  # VOLO's outlooker config
    assert _params(m) == _params(ref)
    ref.load_state_dict(m.attn.state_dict())
    x = torch.randn(2, 7, 9, DIM)
    torch.testing.assert_close(m(x), ref(x))


def test_xca_matches_timm_xcit():
    from timm.models.xcit import XCA

    m = _build("xca", num_heads=4)
    ref = XCA(DIM, num_heads=4, qkv_bias=True).eval()
    assert _params(m) == _params(ref)
    ref.load_state_dict(m.attn.state_dict())
    x = torch.randn(2, 8, 12, DIM)
    torch.testing.assert_close(m(x), ref(x.flatten(1, 2)).view(2, 8, 12, DIM))


def test_focal_modulation_matches_timm_focalnet():
    from timm.models.focalnet import FocalModulation

    m = _build("focal_modulation", focal_level=2, focal_window=3)
    ref = FocalModulation(DIM, focal_window=3, focal_level=2).eval()  # FocalNet-T (SRF) config
    assert _params(m) == _params(ref)
    ref.load_state_dict(m.modulation.state_dict())
    x = torch.randn(2, 8, 12, DIM)
    torch.testing.assert_close(m(x), ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


# --- MaxViT block / grid and shuffle windows --------------------------------------------


@pytest.mark.parametrize("pos", ["none", "rel_bias"])
def test_maxvit_params_match_timm_attention_cl(pos):
    from timm.layers import RelPosBias
    from timm.models.maxxvit import AttentionCl

    rel = partial(RelPosBias, window_size=(7, 7)) if pos == "rel_bias" else None
    ref = AttentionCl(DIM, DIM, dim_head=32, rel_pos_cls=rel)
    for name in ("maxvit_block", "maxvit_grid"):
        assert _params(_build(name, pos=pos, num_heads=2)) == _params(ref)  # MaxViT: 32 channels per head


@pytest.mark.parametrize("name,mode", [("maxvit_block", "block"), ("maxvit_grid", "grid")])
def test_maxvit_matches_timm_partitions_on_divisible_grid(name, mode):
    from timm.models.maxxvit import (
        AttentionCl,
        grid_partition,
        grid_reverse,
        window_partition,
        window_reverse,
    )

    m = _build(name, num_heads=2)  # MaxViT: 32 channels per head
    ref = AttentionCl(DIM, DIM, dim_head=32, head_first=False).eval()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 14, 14, DIM)
    part, rev = (window_partition, window_reverse) if mode == "block" else (grid_partition, grid_reverse)
    want = rev(ref(part(x, [7, 7])), [7, 7], [14, 14])
    torch.testing.assert_close(m(x), want)


def _attend_crops(m, x, crops):
    """Global attention with ``m``'s weights on each crop of ``x``, written back in place."""
    g = GlobalAttention(DIM, num_heads=m.num_heads).eval()
    g.load_state_dict(m.state_dict())
    out = torch.zeros_like(x)
    for sl in crops:
        out[sl] = g(x[sl])
    return out


@pytest.mark.parametrize("grid", [(5, 7), (8, 12)])
def test_maxvit_padding_is_masked(grid):
    """On grids the partition does not divide, each block / grid group equals attention over the
    real tokens only (so padded keys are masked)."""
    H, W = grid
    x = torch.randn(2, H, W, DIM)
    block = _build("maxvit_block", grid=grid, window_size=4)
    crops = [(slice(None), slice(r, r + 4), slice(c, c + 4)) for r in range(0, H, 4) for c in range(0, W, 4)]
    torch.testing.assert_close(block(x), _attend_crops(block, x, crops))
    gridm = _build("maxvit_grid", grid=grid, window_size=4)
    sh, sw = -(-H // 4), -(-W // 4)  # stride between the members of a grid group
    crops = [(slice(None), slice(a, None, sh), slice(b, None, sw)) for a in range(sh) for b in range(sw)]
    torch.testing.assert_close(gridm(x), _attend_crops(gridm, x, crops))
    if grid == (8, 12):  # groups shrink to 4x3 at the same stride: no padding at all
        assert list(gridm._masks.values()) == [None]


def test_shuffle_window_alternates_regular_and_shuffled_windows():
    x = torch.randn(2, 14, 14, DIM)
    for block_index, twin in ((0, "maxvit_block"), (1, "maxvit_grid")):
        m = _build("shuffle_window", block_index=block_index, num_heads=2, window_size=7)
        ref = _build(twin, num_heads=2, window_size=7)
        ref.load_state_dict(m.state_dict())
        torch.testing.assert_close(m(x), ref(x))
    plain = _build("shuffle_window", block_index=1, shuffle=False, num_heads=2)
    ref = _build("maxvit_block", num_heads=2)
    ref.load_state_dict(plain.state_dict())
    torch.testing.assert_close(plain(x), ref(x))


# --- talking heads ------------------------------------------------------------------------


def test_talking_heads_identity_mixing_is_plain_attention():
    m = _build("talking_heads", num_heads=4)  # the head maps start as the identity
    g = GlobalAttention(DIM, num_heads=4).eval()
    g.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("proj_")})  # all but the head maps
    x = torch.randn(2, 8, 12, DIM)
    torch.testing.assert_close(m(x), g(x), atol=1e-5, rtol=1e-4)


def test_talking_heads_matches_timm_cait():
    from timm.models.cait import TalkingHeadAttn

    m = _build("talking_heads", num_heads=4)
    with torch.no_grad():
        for p in (m.proj_l_weight, m.proj_l_bias, m.proj_w_weight, m.proj_w_bias):
            p.normal_()
    ref = TalkingHeadAttn(DIM, num_heads=4, qkv_bias=True).eval()
    assert _params(m) == _params(ref)
    # proj_l_weight -> proj_l.weight, ...: timm keeps the head maps as nn.Linear
    ref.load_state_dict({k.replace("_weight", ".weight").replace("_bias", ".bias"): v for k, v in m.state_dict().items()})
    x = torch.randn(2, 7, 7, DIM)
    torch.testing.assert_close(m(x), ref(x.flatten(1, 2)).view(2, 7, 7, DIM), atol=1e-5, rtol=1e-4)


# --- LSH ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_hashes", [1, 3])
def test_lsh_single_chunk_is_shared_qk_attention(n_hashes):
    """When one chunk holds every token, LSH attention is full shared-QK attention (self masked)."""
    m = _build("lsh", grid=(7, 7), bucket_size=64, n_hashes=n_hashes)
    x = torch.randn(2, 7, 7, DIM)
    qk = m.qk(x).view(2, 49, 4, 16).transpose(1, 2)
    v = m.v(x).view(2, 49, 4, 16).transpose(1, 2)
    logits = qk @ F.normalize(qk, dim=-1).transpose(-2, -1) / 4 - 1e4 * torch.eye(49)
    want = m.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 7, DIM))
    torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-4)


def test_lsh_is_local_to_buckets():
    """With small chunks a token's output depends only on its own and the neighbouring chunk."""
    m = _build("lsh", grid=(14, 14), bucket_size=8, num_heads=1)
    assert m.n_buckets == 24 and "rotations" not in m.state_dict()  # checkpoints load at any grid
    torch.manual_seed(123)  # the rotations do not depend on the global RNG
    other = MIXERS.get("lsh")(DIM, grid_size=(14, 14), pos_encoding="none", block_index=0, bucket_size=8, num_heads=1)
    assert torch.equal(m.rotations, other.rotations)
    x = torch.randn(1, 14, 14, DIM, requires_grad=True)
    m(x)[0, 3, 5].sum().backward()
    reached = (x.grad.abs().sum(-1) > 0).sum().item()
    assert 1 < reached <= 2 * 8  # itself plus at most its chunk and the previous one


# --- Vision Longformer --------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(7, 7), (8, 12)])
def test_longformer_full_window_without_globals_is_global_attention(grid):
    m = _build("longformer", grid=grid, window_size=max(grid), num_global=0)
    g = GlobalAttention(DIM, num_heads=4).eval()
    g.load_state_dict(m.state_dict())
    x = torch.randn(2, *grid, DIM)
    torch.testing.assert_close(m(x), g(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("window", [3, 4])
def test_longformer_matches_per_query_reference(window):
    """Blocked layout == each query attending to its own clamped window (+ rel bias), token by token."""
    H, W = 5, 9
    m = _build("longformer", grid=(H, W), pos="rel_bias", window_size=window, num_global=0)
    with torch.no_grad():
        m.pos.table.normal_()
    x = torch.randn(2, H, W, DIM)
    q, k, v = m.qkv(x).view(2, H * W, 3, 4, 16).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
    table = m.pos.bias(q, (window, window))[0]  # (h, w*w, w*w)
    out = torch.zeros_like(q)
    for i in range(H):
        for j in range(W):
            r0, c0 = min(max(i - window // 2, 0), H - window), min(max(j - window // 2, 0), W - window)
            keys = [(r0 + a) * W + c0 + b for a in range(window) for b in range(window)]
            me = (i - r0) * window + (j - c0)
            logits = q[:, :, i * W + j, None, :] @ k[:, :, keys].transpose(-2, -1) / 4 + table[:, me][:, None]
            out[:, :, i * W + j] = (logits.softmax(-1) @ v[:, :, keys])[:, :, 0]
    want = m.proj(out.transpose(1, 2).reshape(2, H, W, DIM))
    torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-4)


def test_longformer_rel_bias_matches_window_attention_on_one_window():
    m = _build("longformer", grid=(7, 7), pos="rel_bias", window_size=7, num_global=0)
    with torch.no_grad():
        m.pos.table.normal_()
    w = _build("window", grid=(7, 7), pos="rel_bias", window_size=7)
    w.load_state_dict(m.state_dict())
    x = torch.randn(2, 7, 7, DIM)
    torch.testing.assert_close(m(x), w(x), atol=1e-5, rtol=1e-4)


def test_longformer_is_local_plus_global():
    x = torch.randn(1, 14, 14, DIM, requires_grad=True)
    local = _build("longformer", window_size=3, num_global=0)
    local(x)[0, 0, 0].sum().backward()
    assert (x.grad.abs().sum(-1) > 0).sum().item() == 9  # the clamped 3x3 corner window
    x.grad = None
    glob = _build("longformer", window_size=3, num_global=2)
    glob(x)[0, 0, 0].sum().backward()
    assert (x.grad.abs().sum(-1) > 0).all()  # the global tokens carry the whole map


# --- shift, LKA, CvT -------------------------------------------------------------------------------


@pytest.mark.parametrize("channel,delta", [(0, (0, -1)), (5, (0, 1)), (10, (-1, 0)), (15, (1, 0)), (40, (0, 0))])
def test_shift_moves_a_one_hot_exactly(channel, delta):
    m = _build("shift", grid=(7, 7))  # 64 // 12 = 5 channels per direction
    assert _params(m) == 0
    x = torch.zeros(1, 7, 7, DIM)
    x[0, 3, 3, channel] = 1.0
    want = torch.zeros_like(x)
    want[0, 3 + delta[0], 3 + delta[1], channel] = 1.0
    assert torch.equal(m(x), want)
    edge = torch.zeros_like(x)
    edge[0, 0, 0, 0] = 1.0  # shifted left off the map: dropped, not wrapped
    assert m(edge).abs().sum() == 0


def test_lka_matches_van_parameter_count():
    m = _build("lka", kernel_size=21, dilation=3)
    C = DIM  # VAN: proj_1, conv0 5x5 dw, conv_spatial 7x7 dw (dilation 3), conv1 1x1, proj_2 (all with bias)
    assert _params(m) == 3 * (C * C + C) + (25 * C + C) + (49 * C + C)
    assert m.conv_spatial.dilation == (3, 3) and m.conv0.kernel_size == (5, 5)


def test_conv_proj_squeezes_keys_and_values():
    m = _build("conv_proj", kv_stride=2)
    seen = {}
    m.conv_k.register_forward_hook(lambda mod, i, o: seen.update(k=o.shape))
    m(torch.randn(1, 14, 14, DIM))
    assert seen["k"][-2:] == (7, 7)
    # CvT's projection: three depthwise 3x3 convs (no bias) + BN, three linears, the output proj
    C = DIM
    assert _params(m) == 3 * (9 * C + 2 * C) + 4 * (C * C + C)


# --- knob rules and declared position encodings ----------------------------------------------------


@pytest.mark.parametrize("name,knobs,needle", [
    ("outlook", {"kernel_size": 4}, "odd"),
    ("outlook", {"stride": 4}, "stride"),
    ("conv_proj", {"kv_stride": 0}, "kv_stride"),
    ("maxvit_block", {"num_heads": 5}, "num_heads"),
    ("maxvit_grid", {"window_size": 8}, "window_size"),
    ("shuffle_window", {"window_size": 8}, "window_size"),
    ("xca", {"num_heads": 5}, "num_heads"),
    ("focal_modulation", {"focal_window": 4}, "focal_window"),
    ("talking_heads", {"num_heads": 3}, "num_heads"),
    ("lsh", {"n_buckets": 3}, "n_buckets"),
    ("longformer", {"num_global": -1}, "num_global"),
    ("longformer", {"window_size": 9}, "window_size"),
    ("shift", {"n_div": 2}, "n_div"),
    ("lka", {"kernel_size": 20, "dilation": 5}, "even"),
])
def test_check_rejects_bad_knobs(name, knobs, needle):
    cls = MIXERS.get(name)
    assert cls.check(DIM, (7, 7), {}) is None
    why = cls.check(DIM, (7, 7), knobs)
    assert why is not None and needle in why


def test_non_attention_mixers_declare_no_position_encoding():
    for name in ("outlook", "xca", "focal_modulation", "shift", "lka", "lsh", "conv_proj"):
        assert MIXERS.get(name).supported_pos == frozenset(), name
    assert "irpe" not in MIXERS.get("longformer").supported_pos


def test_genome_validation_uses_the_declared_encodings():
    import dataclasses

    from search_space import PRESETS

    base = PRESETS["deit_tiny"]

    def with_mixer(mixer: str, pos: str):
        stages = tuple(dataclasses.replace(s, mixer=mixer, mixer_knobs={"num_heads": 3}, pos=pos) for s in base.stages)
        return base.replace(stages=stages)

    with_mixer("longformer", "rel_bias").validate()
    with_mixer("maxvit_grid", "rope_axial").validate()
    with pytest.raises(ValueError, match="xca"):
        with_mixer("xca", "rel_bias").validate()
