"""Contract tests parametrised over the registries: a new operator is tested once registered."""

from __future__ import annotations

import pytest
import torch

import operators
from operators import CHANNEL_ATTNS, CHANNEL_MLPS, DOWNSAMPLERS, MIXERS, POS_ENCODINGS, STEMS

GRIDS = [(7, 7), (14, 14), (8, 12)]
DIM = 64


def _knobs(cls, grid):
    return cls.contract_knobs(grid) if hasattr(cls, "contract_knobs") else {}


def _build(name, grid, pos="none", block_index=0):
    cls = MIXERS.get(name)
    return cls(DIM, grid_size=grid, pos_encoding=pos, block_index=block_index, **_knobs(cls, grid))


def _check_grads(module, loss):
    loss.backward()
    for pname, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"no gradient reached {pname}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {pname}"


@pytest.mark.parametrize("name", MIXERS.names())
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("batch", [1, 3])
def test_mixer_contract(name, grid, batch):
    # shifted variants (block_index=1) exercise the alternate path where a mixer has one
    for block_index in (0, 1):
        torch.manual_seed(0)
        m = _build(name, grid, block_index=block_index)
        x = torch.randn(batch, *grid, DIM, requires_grad=True)
        y = m(x)
        assert y.shape == x.shape, f"{name}: {tuple(y.shape)} != {tuple(x.shape)}"
        assert torch.isfinite(y).all()
        _check_grads(m, y.float().square().mean())
        assert x.grad is not None and torch.isfinite(x.grad).all()
        m.eval()
        with torch.no_grad():
            assert torch.equal(m(x), m(x)), f"{name}: eval output is not deterministic"


def _real_grad_check(name, grid):
    """Every parameter gets a non-zero gradient from the output (not via the 0*sum trick)."""
    torch.manual_seed(0)
    m = _build(name, grid, block_index=1)
    x = torch.randn(2, *grid, DIM, requires_grad=True)
    m(x).square().mean().backward()
    return [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]


@pytest.mark.parametrize("name", MIXERS.names())
def test_mixer_gradients_reach_every_parameter(name):
    missing = _real_grad_check(name, (14, 14))
    assert not missing, f"{name}: parameters without gradient: {missing}"


def _attn_pos_pairs():
    return [(m, p) for m, cls in MIXERS.items() for p in sorted(cls.supported_pos)]


@pytest.mark.parametrize("mixer,pos", _attn_pos_pairs())
@pytest.mark.parametrize("grid", [(14, 14), (8, 12)], ids=lambda g: f"{g[0]}x{g[1]}")
def test_mixer_with_attention_position_encoding(mixer, pos, grid):
    m = _build(mixer, grid, pos=pos)
    x = torch.randn(2, *grid, DIM)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, f"{mixer}+{pos}: parameters without gradient: {missing}"


@pytest.mark.parametrize("name", [n for n, c in POS_ENCODINGS.items() if c.placement == "grid"])
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_grid_position_encoding_contract(name, grid):
    enc = POS_ENCODINGS.get(name)(DIM, grid_size=grid)
    x = torch.randn(2, *grid, DIM)
    assert enc(x).shape == x.shape
    # a different grid at run time (a new image size) still works
    other = (grid[0] + 2, grid[1] + 4)
    assert enc(torch.randn(1, *other, DIM)).shape == (1, *other, DIM)


def test_every_pos_encoding_declares_its_placement():
    for name, cls in POS_ENCODINGS.items():
        assert cls.placement in ("grid", "attention"), name


def test_every_attention_pos_encoding_is_supported_by_some_mixer():
    supported = set().union(*(c.supported_pos for _, c in MIXERS.items()))
    for name, cls in POS_ENCODINGS.items():
        if cls.placement == "attention":
            assert name in supported, f"no mixer supports {name}"


@pytest.mark.parametrize("name", STEMS.names())
def test_stem_contract(name):
    cls = STEMS.get(name)
    patch = 4
    stem = cls(3, DIM, patch_size=patch, **(cls.contract_knobs() if hasattr(cls, "contract_knobs") else {}))
    y = stem(torch.randn(2, 3, 32, 48))
    assert y.shape == (2, 32 // patch, 48 // patch, DIM)
    y.mean().backward()


@pytest.mark.parametrize("name", DOWNSAMPLERS.names())
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_downsampler_contract(name, grid):
    cls = DOWNSAMPLERS.get(name)
    d = cls(DIM, 2 * DIM)
    y = d(torch.randn(2, *grid, DIM))
    s = cls.stride
    assert y.shape == (2, -(-grid[0] // s), -(-grid[1] // s), 2 * DIM)


@pytest.mark.parametrize("name", CHANNEL_MLPS.names())
def test_channel_mlp_contract(name):
    m = CHANNEL_MLPS.get(name)(DIM, 4 * DIM)
    x = torch.randn(2, 8, 12, DIM)
    assert m(x).shape == x.shape


@pytest.mark.parametrize("name", CHANNEL_ATTNS.names())
def test_channel_attention_contract(name):
    m = CHANNEL_ATTNS.get(name)(DIM)
    x = torch.randn(2, 8, 12, DIM)
    assert m(x).shape == x.shape


@pytest.mark.parametrize("name", MIXERS.names())
def test_mixer_cites_a_paper(name):
    import inspect

    doc = inspect.getmodule(MIXERS.get(name)).__doc__ or ""
    assert "Paper" in doc or "paper" in doc, f"module of {name} should name its paper"


def test_unified_block_with_layer_scale_and_drop_path():
    blk = operators.UnifiedBlock(DIM, token_mixer=MIXERS["attention"], grid_size=(7, 7), layer_scale=1e-5, drop_path=0.1,
                                 mixer_knobs={"num_heads": 2})
    x = torch.randn(2, 7, 7, DIM)
    assert blk(x).shape == x.shape
    blk.eval()
    # with LayerScale at 1e-5 the block starts close to the identity
    assert torch.allclose(blk(x), x, atol=1e-3)


def test_registry_unknown_name_lists_known():
    with pytest.raises(ValueError, match="known: .*attention"):
        MIXERS.get("atention")
    with pytest.raises(ValueError, match="did you mean 'attention'"):
        MIXERS.get("atention")
