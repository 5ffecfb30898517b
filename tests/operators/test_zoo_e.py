"""Zoo part E: Transformer-LS, SOFT, QuadTree, Pale, ResT, glance-and-gaze, QnA, EdgeViT, CoaT,
UniFormer, iFormer, ParC, ISA, A^2-Nets; SK, FcaNet, eSE, triplet, split attention, GC; LeFF and
IRFFN. The registry-wide contracts live in test_contract.py; these are the numerical checks
against reductions to existing operators or independent references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import operators
from operators import CHANNEL_ATTNS, CHANNEL_MLPS, MIXERS

DIM = 64
NEW_MIXERS = ("long_short", "soft", "quadtree", "pale", "rest", "glance_gaze", "qna", "edgevit_lgl", "coat",
              "uniformer_local", "inception", "parc", "isa", "double_attention")
NEW_CHANNEL_ATTNS = ("sk", "fca", "ese", "triplet", "splat", "gc")
NEW_MLPS = ("leff", "irffn")


def _global_attention_like(src, heads, grid, qkv=None):
    """A ``GlobalAttention`` sharing ``src``'s projections (``qkv`` weight/bias if given)."""
    g = MIXERS["attention"](DIM, grid_size=grid, num_heads=heads)
    with torch.no_grad():
        w, b = qkv if qkv is not None else (src.qkv.weight, src.qkv.bias)
        g.qkv.weight.copy_(w)
        g.qkv.bias.copy_(b)
        g.proj.weight.copy_(src.proj.weight)
        g.proj.bias.copy_(src.proj.bias)
    return g


def test_every_new_operator_is_registered_and_its_family_listed():
    for name in NEW_MIXERS:
        assert name in MIXERS
        assert MIXERS[name].__module__.split(".")[-1] in operators.FAMILIES
    for name in NEW_CHANNEL_ATTNS:
        assert name in CHANNEL_ATTNS
    for name in NEW_MLPS:
        assert name in CHANNEL_MLPS


@pytest.mark.parametrize("name,knobs,match", [
    ("pale", {"num_heads": 3}, "even"),
    ("inception", {"attn_ratio": 1.0}, "strictly between"),
    ("inception", {"num_heads": 3}, "must divide the 32 attention channels"),
    ("qna", {"kernel_size": 4}, "odd"),
    ("soft", {"landmark_size": 0}, "landmark_size=0"),
    ("quadtree", {"topk": 0}, "topk=0"),
    ("long_short", {"num_landmarks": 0}, "num_landmarks=0"),
    ("edgevit_lgl", {"sample_ratio": 0}, "sample_ratio=0"),
    ("glance_gaze", {"gaze_kernel": 2}, "odd"),
    ("coat", {"crpe_window": 4}, "odd"),
    ("double_attention", {"feature_ratio": 0.0}, "feature_ratio"),
])
def test_bad_knobs_raise_one_line_value_errors(name, knobs, match):
    with pytest.raises(ValueError, match=match) as e:
        MIXERS[name](DIM, grid_size=(14, 14), **knobs)
    assert "\n" not in str(e.value) and str(e.value).startswith(name)
    assert MIXERS[name].check(DIM, (14, 14), knobs) is not None


# ---------------------------------------------------------------- Pale


@pytest.mark.parametrize("grid", [(7, 7), (8, 12)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_pale_with_the_whole_map_as_one_pale_is_global_attention(grid):
    torch.manual_seed(0)
    m = MIXERS["pale"](DIM, grid_size=grid, num_heads=4, pale_size=max(grid))
    x = torch.randn(2, *grid, DIM)
    assert torch.allclose(m(x), _global_attention_like(m, 4, grid)(x), atol=1e-5)


def test_pale_groups_are_interlaced_rows_and_columns_with_padding_masked():
    """Reference: full-map attention with a mask that keeps only the token's interlaced row group
    (first half of the heads) or column group (second half); 7 rows with pale 3 -> 3 groups,
    the padded slots of the last group masked."""
    torch.manual_seed(0)
    H, W, s, heads = 7, 5, 3, 4
    m = MIXERS["pale"](DIM, grid_size=(H, W), num_heads=heads, pale_size=s)
    x = torch.randn(1, H, W, DIM)
    q, k, v = m.qkv(x).view(1, H * W, 3, heads, DIM // heads).permute(2, 0, 3, 1, 4).unbind(0)
    r = torch.arange(H)[:, None].expand(H, W).flatten()
    c = torch.arange(W)[None, :].expand(H, W).flatten()
    gr, gc = r % math.ceil(H / s), c % math.ceil(W / s)
    same_rows = gr[:, None] == gr[None, :]
    same_cols = gc[:, None] == gc[None, :]
    mask = torch.stack([same_rows, same_rows, same_cols, same_cols])[None]  # (1, heads, N, N)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref = m.proj(ref.transpose(1, 2).reshape(1, H, W, DIM))
    assert torch.allclose(m(x), ref, atol=1e-5)


# ---------------------------------------------------------------- ResT, ISA, glance-and-gaze


def test_rest_without_reduction_and_head_transform_is_global_attention():
    torch.manual_seed(0)
    m = MIXERS["rest"](DIM, grid_size=(7, 7), sr_ratio=1, head_transform=False)
    qkv = (torch.cat([m.q.weight, m.kv.weight]), torch.cat([m.q.bias, m.kv.bias]))
    x = torch.randn(2, 7, 7, DIM)
    assert torch.allclose(m(x), _global_attention_like(m, 4, (7, 7), qkv)(x), atol=1e-5)


def test_rest_head_transform_mixes_logits_then_instance_norms():
    torch.manual_seed(0)
    m = MIXERS["rest"](DIM, grid_size=(8, 8), sr_ratio=2)
    x = torch.randn(2, 8, 8, DIM)
    q = m.q(x).view(2, 64, 4, 16).transpose(1, 2)
    r = m.norm(m.sr(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2))  # (2, 16, C)
    k, v = (t.view(2, 16, 4, 16).transpose(1, 2) for t in m.kv(r).chunk(2, -1))
    logits = (q @ k.transpose(-2, -1)) / 4
    mixed = torch.einsum("gh,bhnm->bgnm", m.transform.weight[:, :, 0, 0], logits) + m.transform.bias[:, None, None]
    a = mixed.softmax(-1)
    a = (a - a.mean((-2, -1), keepdim=True)) / (a.var((-2, -1), unbiased=False, keepdim=True) + 1e-5).sqrt()
    ref = m.proj((a @ v).transpose(1, 2).reshape(2, 8, 8, DIM))
    assert torch.allclose(m(x), ref, atol=1e-4)


def test_isa_on_a_divisible_grid_is_maxvit_grid_then_block_attention():
    """8x8, P = 4: the long-range groups are MaxViT grid groups of 2x2 tokens 4 apart."""
    torch.manual_seed(0)
    m = MIXERS["isa"](DIM, grid_size=(8, 8), window_size=4)
    x = torch.randn(2, 8, 8, DIM)
    g = MIXERS["maxvit_grid"](DIM, grid_size=(8, 8), window_size=2)
    b = MIXERS["maxvit_block"](DIM, grid_size=(8, 8), window_size=4)
    g.load_state_dict(m.long_range.state_dict())
    b.load_state_dict(m.short_range.state_dict())
    assert torch.allclose(m(x), b(g(x)), atol=1e-5)
    assert not torch.allclose(m(x), g(b(x)), atol=1e-3)  # the order matters


def _masked_attention(step, x, allowed):
    """Full-map attention of one ISA step restricted to ``allowed (N, N)`` pairs."""
    B, H, W, C = x.shape
    q, k, v = step.qkv(x).view(B, H * W, 3, 4, C // 4).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return step.proj(out.transpose(1, 2).reshape(B, H, W, C))


@pytest.mark.parametrize("grid", [(7, 10), (8, 12)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_isa_long_range_groups_tokens_p_apart_then_short_range_p_blocks(grid):
    """Reference on the unpadded map: long range = same (row mod P, col mod P), short range =
    same (row // P, col // P); padding (7 and 10 are not multiples of 3) changes nothing."""
    torch.manual_seed(0)
    P = 3
    m = MIXERS["isa"](DIM, grid_size=grid, window_size=P)
    x = torch.randn(2, *grid, DIM)
    r = torch.arange(grid[0])[:, None].expand(grid).flatten()
    c = torch.arange(grid[1])[None, :].expand(grid).flatten()
    same_class = ((r % P)[:, None] == (r % P)[None]) & ((c % P)[:, None] == (c % P)[None])
    same_block = ((r // P)[:, None] == (r // P)[None]) & ((c // P)[:, None] == (c // P)[None])
    ref = _masked_attention(m.short_range, _masked_attention(m.long_range, x, same_class), same_block)
    assert torch.allclose(m(x), ref, atol=1e-5)


@pytest.mark.parametrize("grid", [(14, 14), (8, 12)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_glance_gaze_without_gaze_is_maxvit_grid_attention(grid):
    torch.manual_seed(0)
    m = MIXERS["glance_gaze"](DIM, grid_size=grid, window_size=7)
    g = MIXERS["maxvit_grid"](DIM, grid_size=grid, window_size=7)
    g.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("gaze")})
    x = torch.randn(2, *grid, DIM)
    with torch.no_grad():
        m.gaze.weight.zero_()
        m.gaze.bias.zero_()
    assert torch.allclose(m(x), g(x), atol=1e-5)


# ---------------------------------------------------------------- SOFT, QuadTree, long-short


def test_soft_with_every_token_a_landmark_is_exact_gaussian_kernel_attention():
    torch.manual_seed(0)
    m = MIXERS["soft"](DIM, grid_size=(4, 4), landmark_size=4, pinv_iters=40)
    with torch.no_grad():
        m.qv.weight[:DIM] *= 8  # well-separated queries: a well-conditioned kernel matrix
    x = torch.randn(1, 4, 4, DIM)
    q, v = (t.reshape(1, 16, 4, 16).transpose(1, 2) for t in m.qv(x).chunk(2, -1))
    a = torch.exp(-torch.cdist(q, q).square() / (2 * 16 ** 0.5))
    assert torch.linalg.cond(a).max() < 1e3
    ref = m.proj((a @ v).transpose(1, 2).reshape(1, 4, 4, DIM))
    assert torch.allclose(m(x), ref, atol=1e-3, rtol=1e-3)


def test_soft_iterative_pinv_matches_torch_pinv():
    from operators.soft import iterative_pinv

    torch.manual_seed(0)
    a = torch.randn(3, 6, 6)
    a = a @ a.transpose(-2, -1) + torch.eye(6)  # symmetric positive definite, like the kernel
    assert torch.allclose(iterative_pinv(a, 30), torch.linalg.pinv(a), atol=1e-4)


def test_quadtree_with_one_level_is_global_attention():
    torch.manual_seed(0)
    m = MIXERS["quadtree"](DIM, grid_size=(7, 9), num_levels=1)
    x = torch.randn(2, 7, 9, DIM)
    assert torch.allclose(m(x), _global_attention_like(m, 4, (7, 9))(x), atol=1e-5)


def test_quadtree_selecting_every_coarse_key_is_fine_plus_coarse_global_attention():
    """With topk >= the coarse tokens, the fine level attends to every fine key (QuadTree-B then
    sums the fine message and the coarse message broadcast to the 2x2 tokens below it)."""
    torch.manual_seed(0)
    H, W = 6, 8
    m = MIXERS["quadtree"](DIM, grid_size=(H, W), num_levels=2, topk=12)
    x = torch.randn(2, H, W, DIM)
    q, k, v = m.qkv(x).view(2, H * W, 3, 4, 16).permute(2, 0, 3, 1, 4).unbind(0)
    fine = F.scaled_dot_product_attention(q, k, v)
    pool = [F.avg_pool2d(t.transpose(2, 3).reshape(2, 64, H, W), 2).view(2, 4, 16, -1).transpose(2, 3)
            for t in (q, k, v)]
    coarse = F.scaled_dot_product_attention(*pool).transpose(2, 3).reshape(2, 64, H // 2, W // 2)
    coarse = coarse.repeat_interleave(2, -2).repeat_interleave(2, -1).view(2, 4, 16, H * W).transpose(2, 3)
    ref = m.proj((fine + coarse).transpose(1, 2).reshape(2, H, W, DIM))
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_quadtree_fine_queries_attend_to_the_children_of_their_parents_topk():
    """Per-token reference for 2 levels on an odd grid (children outside the map dropped)."""
    torch.manual_seed(0)
    H, W, K = 5, 7, 2
    m = MIXERS["quadtree"](DIM, grid_size=(H, W), num_levels=2, topk=K)
    x = torch.randn(1, H, W, DIM)
    q, k, v = m.qkv(x).view(1, H * W, 3, 4, 16).permute(2, 0, 3, 1, 4).unbind(0)  # (1, h, N, d)
    pool = [F.avg_pool2d(t.transpose(2, 3).reshape(1, 64, H, W), 2, ceil_mode=True) for t in (q, k, v)]
    h0, w0 = pool[0].shape[-2:]
    q0, k0, v0 = (t.view(1, 4, 16, -1).transpose(2, 3) for t in pool)
    coarse = F.scaled_dot_product_attention(q0, k0, v0)  # (1, h, N0, d)
    top = (q0 @ k0.transpose(-2, -1)).topk(K, dim=-1).indices  # (1, h, N0, K)
    out = torch.zeros(1, 4, H * W, 16)
    for head in range(4):
        for i in range(H * W):
            y, xx = divmod(i, W)
            parent = (y // 2) * w0 + xx // 2
            keys = []
            for c in top[0, head, parent].tolist():
                cy, cx = divmod(c, w0)
                keys += [(2 * cy + dy) * W + 2 * cx + dx for dy in (0, 1) for dx in (0, 1)
                         if 2 * cy + dy < H and 2 * cx + dx < W]
            fine = F.scaled_dot_product_attention(q[0, head, i:i + 1], k[0, head, keys], v[0, head, keys])
            out[0, head, i] = fine[0] + coarse[0, head, parent]
    ref = m.proj(out.transpose(1, 2).reshape(1, H, W, DIM))
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_long_short_matches_a_per_token_reference():
    """Each query: one softmax over the valid keys of its window widened by w // 2, and the
    r landmarks of the dynamic projection (DualLN on both)."""
    torch.manual_seed(0)
    H, W, w, heads, r = 5, 7, 3, 4, 4
    m = MIXERS["long_short"](DIM, grid_size=(H, W), num_heads=heads, window_size=w, num_landmarks=r)
    x = torch.randn(1, H, W, DIM)
    d = DIM // heads
    q, k, v = m.qkv(x).view(1, H * W, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # (1, h, N, d)
    p = torch.einsum("bhnd,hdr->bhnr", k, m.dyn_proj).softmax(2)
    kl, vl = m.ln_long(p.transpose(-2, -1) @ k), m.ln_long(p.transpose(-2, -1) @ v)
    ks, vs = m.ln_short(k), m.ln_short(v)
    out = torch.zeros(1, heads, H * W, d)
    for i in range(H * W):
        y, xx = divmod(i, W)
        y0, x0 = (y // w) * w - w // 2, (xx // w) * w - w // 2
        keys = [j for j in range(H * W) if y0 <= j // W < y0 + w + 2 * (w // 2)
                and x0 <= j % W < x0 + w + 2 * (w // 2)]
        kk = torch.cat([ks[:, :, keys], kl], 2)
        vv = torch.cat([vs[:, :, keys], vl], 2)
        out[:, :, i] = F.scaled_dot_product_attention(q[:, :, i:i + 1], kk, vv)[:, :, 0]
    ref = m.proj(out.transpose(1, 2).reshape(1, H, W, DIM))
    assert torch.allclose(m(x), ref, atol=1e-5)


# ---------------------------------------------------------------- QnA, A^2, CoaT, ParC, UniFormer


def test_qna_matches_a_per_token_reference():
    torch.manual_seed(0)
    H, W, k, heads, L = 5, 6, 3, 4, 2
    m = MIXERS["qna"](DIM, grid_size=(H, W), num_heads=heads, kernel_size=k, num_queries=L)
    with torch.no_grad():
        m.rel_bias.normal_()
    x = torch.randn(1, H, W, DIM)
    d = DIM // heads
    kv = m.kv(x)[0]  # (H, W, 2C)
    outs = torch.zeros(H, W, L, DIM)
    for y in range(H):
        for xx in range(W):
            keys, bias = [], []
            for dy in range(k):
                for dx in range(k):
                    yy, xj = y + dy - k // 2, xx + dx - k // 2
                    if 0 <= yy < H and 0 <= xj < W:
                        keys.append(kv[yy, xj])
                        bias.append(m.rel_bias[:, dy * k + dx])
            kk, vv = torch.stack(keys).view(-1, 2, heads, d).permute(1, 2, 0, 3)  # (h, n, d) each
            logits = m.queries @ kk.transpose(-2, -1) / d ** 0.5 + torch.stack(bias, -1)[:, None]  # (h, L, n)
            o = logits.softmax(-1) @ vv  # (h, L, d)
            outs[y, xx] = o.transpose(0, 1).reshape(L, DIM)
    ref = m.proj(outs.reshape(1, H, W, L * DIM))
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_double_attention_matches_the_papers_gather_distribute_formula():
    torch.manual_seed(0)
    m = MIXERS["double_attention"](DIM, grid_size=(6, 6))
    x = torch.randn(2, 6, 6, DIM)
    X = x.view(2, 36, DIM)
    A = m.features(X)  # (B, N, m)
    Bmaps = (X @ m.gather_q.T).softmax(dim=1)  # (B, N, n): softmax over positions
    G = Bmaps.transpose(1, 2) @ A  # (B, n, m) global descriptors
    V = (X @ m.distribute_k.T).softmax(dim=2)  # (B, N, n): softmax over descriptors
    ref = m.proj(V @ G).view(2, 6, 6, DIM)
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_coat_is_factorised_attention_plus_conv_relative_position_encoding():
    torch.manual_seed(0)
    heads = 8
    m = MIXERS["coat"](DIM, grid_size=(6, 7), num_heads=heads)
    crpe = m.attn.crpe.crpe
    assert crpe.window == {3: 2, 5: 3, 7: 3}  # CoaT's split for 8 heads
    x = torch.randn(2, 6, 7, DIM)
    d = DIM // heads
    q, k, v = m.attn.qkv(x.view(2, 42, DIM)).view(2, 42, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    factor = q @ (k.softmax(dim=2).transpose(-2, -1) @ v) * d ** -0.5
    vimg = v.transpose(-1, -2).reshape(2, DIM, 6, 7).split(crpe.channel_splits, dim=1)
    conv = torch.cat([c(t) for c, t in zip(crpe.conv_list, vimg)], 1).view(2, heads, d, 42).transpose(-1, -2)
    ref = m.attn.proj((factor + q * conv).transpose(1, 2).reshape(2, 42, DIM)).view(2, 6, 7, DIM)
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_parc_circular_convolution_matches_rolled_sum_and_is_roll_equivariant():
    from operators.parc import circular_conv_h

    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 5, 4), torch.randn(3, 1, 5, 1), torch.randn(3)
    ref = sum(w[:, 0, j, 0][None, :, None, None] * torch.roll(x, -j, dims=2) for j in range(5)) + b[:, None, None]
    assert torch.allclose(circular_conv_h(x, w, b), ref, atol=1e-5)
    m = MIXERS["parc"](DIM, grid_size=(6, 8), position_embedding=False)
    xi = torch.randn(1, 6, 8, DIM)
    assert torch.allclose(m(torch.roll(xi, (2, 3), (1, 2))), torch.roll(m(xi), (2, 3), (1, 2)), atol=1e-5)
    # every output sees its whole row and column (global along each axis, on its channel half)
    xi.requires_grad_(True)
    m(xi)[0, 0, 0].sum().backward()
    seen = xi.grad[0].abs().sum(-1) > 0
    assert seen[:, 0].all() and seen[0, :].all() and not seen[1:, 1:].any()


def test_parc_runs_on_another_grid_by_interpolating_kernels():
    m = MIXERS["parc"](DIM, grid_size=(7, 7))
    assert m(torch.randn(1, 10, 12, DIM)).shape == (1, 10, 12, DIM)


def test_uniformer_local_affinity_is_local():
    torch.manual_seed(0)
    m = MIXERS["uniformer_local"](DIM, grid_size=(11, 11), kernel_size=5)
    x = torch.randn(1, 11, 11, DIM, requires_grad=True)
    m(x)[0, 5, 5].sum().backward()
    seen = (x.grad[0].abs().sum(-1) > 0).nonzero()
    assert seen.min() == 3 and seen.max() == 7  # exactly the 5x5 neighbourhood


def test_inception_low_branch_is_pooled_global_attention():
    """With the convolutional paths' outputs zeroed, the mixer is proj(y + dwconv(y)) of the
    upsampled pooled attention, so it is constant over each 2x2 pooled cell before the fusion."""
    torch.manual_seed(0)
    m = MIXERS["inception"](DIM, grid_size=(8, 8), attn_ratio=0.5, pool_size=2)
    x = torch.randn(1, 8, 8, DIM)
    low = x[..., 32:].permute(0, 3, 1, 2)
    lo = m.attn(F.avg_pool2d(low, 2).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    lo = lo.repeat_interleave(2, -2).repeat_interleave(2, -1)
    hi = torch.cat([m.conv_path(x[..., :16].permute(0, 3, 1, 2)), m.pool_path(x[..., 16:32].permute(0, 3, 1, 2))], 1)
    y = torch.cat([hi, lo], 1)
    assert torch.allclose(m(x), m.proj(y + m.fuse(y)).permute(0, 2, 3, 1), atol=1e-5)


def test_edgevit_lgl_global_branch_reads_only_delegates():
    """Zero local aggregation: the output then depends on the input only through the stride-r
    delegates (LayerNorm'd) -- changing a non-delegate token changes nothing."""
    torch.manual_seed(0)
    m = MIXERS["edgevit_lgl"](DIM, grid_size=(8, 8), sample_ratio=2)
    with torch.no_grad():
        m.local.proj.weight.zero_()
        m.local.proj.bias.zero_()
    x = torch.randn(1, 8, 8, DIM)
    x2 = x.clone()
    x2[0, 1, 1] += torch.randn(DIM)  # (1, 1) is not a delegate (delegates sit at even rows and columns)
    assert torch.allclose(m(x), m(x2), atol=1e-6)
    x2[0, 2, 2] += torch.randn(DIM)  # a delegate (not a constant shift, which LayerNorm removes)
    assert not torch.allclose(m(x), m(x2), atol=1e-3)


# ---------------------------------------------------------------- channel attention and MLPs


def test_fca_dct_basis_is_orthonormal_and_its_lowest_frequency_is_average_pooling():
    from operators.channel_attention_ext import FCA_TOP16, dct_filters

    basis = dct_filters(16, 7, FCA_TOP16).view(16, 49)
    assert torch.allclose(basis @ basis.T, torch.eye(16), atol=1e-5)
    assert torch.allclose(basis[0], torch.full((49,), 1 / 7))  # frequency (0, 0): 7 x the mean
    groups = dct_filters(64, 7)
    assert torch.equal(groups[0], groups[3]) and not torch.equal(groups[3], groups[4])  # 4 channels each


def test_fca_with_only_the_dc_frequency_is_squeeze_excitation():
    from operators.channel_attention_ext import dct_filters

    torch.manual_seed(0)
    m = CHANNEL_ATTNS["fca"](DIM)
    m.dct = dct_filters(DIM, 7, ((0, 0),))
    x = torch.randn(2, 7, 7, DIM)
    ref = x * m.fc(7 * x.mean((1, 2)))[:, None, None, :]
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_triplet_attention_gates_with_the_three_planes():
    torch.manual_seed(0)
    m = CHANNEL_ATTNS["triplet"](DIM).eval()
    x = torch.randn(2, 5, 6, DIM)

    def gate(branch, t):  # t: (B, A, P, Q), pooled over A
        z = torch.cat([t.amax(1, keepdim=True), t.mean(1, keepdim=True)], 1)
        return torch.sigmoid(branch.bn(branch.conv(z)))

    g_hw = gate(m.hw, x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, 1)
    g_wc = gate(m.cw, x)  # (B, 1, W, C)
    g_hc = gate(m.ch, x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # (B, H, 1, C)
    assert torch.allclose(m(x), x * (g_hw + g_wc + g_hc) / 3, atol=1e-6)


def test_gc_starts_as_the_identity_and_ese_has_no_reduction():
    x = torch.randn(2, 5, 6, DIM)
    assert torch.allclose(CHANNEL_ATTNS["gc"](DIM)(x), x)
    assert CHANNEL_ATTNS["ese"](DIM).attn.fc.weight.shape == (DIM, DIM, 1, 1)


@pytest.mark.parametrize("name", NEW_MLPS)
def test_conv_mlps_train_and_eval(name):
    m = CHANNEL_MLPS[name](DIM, 4 * DIM)
    x = torch.randn(2, 5, 6, DIM)
    m(x).square().mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    assert m(x).shape == x.shape
