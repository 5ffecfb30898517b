"""The unified block is given operator classes (timm MetaFormer style), never names."""

from __future__ import annotations

import inspect

import torch
from torch import nn

import operators
from operators import CHANNEL_ATTNS, CHANNEL_MLPS, MIXERS
from search_space import PRESETS, build_model


class _Scale(nn.Module):
    """A mixer no registry knows: the block must build it from the class alone."""

    def __init__(self, dim: int, *, grid_size, pos_encoding: str = "none", block_index: int = 0, factor: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(torch.full((dim,), factor))
        self.seen = (tuple(grid_size), pos_encoding, block_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w  # (B, H, W, C)


class _Gate(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.g)


def test_block_builds_the_classes_it_is_given():
    blk = operators.UnifiedBlock(8, token_mixer=_Scale, mixer_knobs={"factor": 2.0}, grid_size=(3, 5),
                                 pos_encoding="rope", block_index=3, mlp_layer=CHANNEL_MLPS["glu"], mlp_ratio=2.0,
                                 channel_attn_layer=_Gate)
    assert isinstance(blk.mixer, _Scale) and blk.mixer.seen == ((3, 5), "rope", 3)
    assert torch.equal(blk.mixer.w, torch.full((8,), 2.0))
    assert isinstance(blk.mlp, CHANNEL_MLPS["glu"]) and isinstance(blk.channel_attn, _Gate)
    x = torch.randn(2, 3, 5, 8)
    assert blk(x).shape == x.shape


def test_block_looks_no_names_up():
    src = inspect.getsource(inspect.getmodule(operators.UnifiedBlock))
    for reg in ("MIXERS", "CHANNEL_MLPS", "CHANNEL_ATTNS", "registry"):
        assert reg not in src, f"operators/block.py mentions {reg}: the builder passes classes"
    params = inspect.signature(operators.UnifiedBlock).parameters
    assert {"token_mixer", "mlp_layer", "channel_attn_layer"} <= set(params)


def test_state_dict_keys_are_unchanged():
    """Exports and checkpoints address the block's parameters by these names."""
    blk = operators.UnifiedBlock(16, token_mixer=MIXERS["attention"], mixer_knobs={"num_heads": 2}, grid_size=(4, 4),
                                 layer_scale=1e-5, channel_attn_layer=CHANNEL_ATTNS["se"])
    assert sorted(blk.state_dict()) == [
        "channel_attn.attn.fc1.bias", "channel_attn.attn.fc1.weight", "channel_attn.attn.fc2.bias",
        "channel_attn.attn.fc2.weight", "ls1.gamma", "ls2.gamma", "mixer.proj.bias", "mixer.proj.weight",
        "mixer.qkv.bias", "mixer.qkv.weight", "mlp.fc1.bias", "mlp.fc1.weight", "mlp.fc2.bias", "mlp.fc2.weight",
        "norm1.bias", "norm1.weight", "norm2.bias", "norm2.weight"]
    blk = operators.UnifiedBlock(16, token_mixer=MIXERS["pool"], grid_size=(4, 4), mlp_layer=CHANNEL_MLPS["glu"])
    assert sorted(blk.state_dict()) == [
        "mlp.fc1_g.bias", "mlp.fc1_g.weight", "mlp.fc1_x.bias", "mlp.fc1_x.weight", "mlp.fc2.bias", "mlp.fc2.weight",
        "norm1.bias", "norm1.weight", "norm2.bias", "norm2.weight"]


def test_builder_resolves_the_genome_names():
    spec = PRESETS["caformer_s18"]
    model = build_model(spec, img_size=64)
    for s, stage in zip(spec.stages, model.stages):
        for blk in stage.blocks:
            assert type(blk.mixer) is MIXERS[s.mixer] and type(blk.mlp) is CHANNEL_MLPS[s.mlp]
