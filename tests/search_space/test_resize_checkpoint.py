"""Weights at another resolution (issue 13 item 1).

A checkpoint saved at one image size loads at another: every tensor whose shape follows the
token grid is resampled by ``checkpoint_filter_fn`` exactly as the saved model's forward pass
resamples it, so the model loaded at the new size gives the outputs the saved model gives on
the same input; linformer's token-count projections are refused in one line.
"""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

import search_space.builder  # noqa: F401 - registers attnnas with timm
from operators import MIXERS, POS_ENCODINGS
from search_space import ArchSpec, StageSpec, StemSpec, build_model
from search_space.builder import checkpoint_filter_fn

TOL = 1e-5
ATTN_POS = sorted(n for n, c in POS_ENCODINGS.items() if c.placement == "attention")
# lsh's default n_buckets = 0 picks its bucket count from the grid it is built for (Reformer's
# one bucket per chunk), so at another size it is another function: fix the count here.
KNOBS = {"lsh": {"n_buckets": 4}, "linformer": {"proj_len": 16}}


def _spec(mixer: str, pos: str, img_size=32) -> ArchSpec:
    knobs = {"num_heads": 2} if "num_heads" in MIXERS.get(mixer).knobs() else {}
    knobs.update(KNOBS.get(mixer, {}))
    return ArchSpec(StemSpec("patchify", 4), (
        StageSpec(1, 32, mixer, knobs, pos=pos),
        StageSpec(1, 32, "attention", {"num_heads": 2}, pos="abs", downsample="patch_merging"),
    ), num_classes=3, img_size=img_size)


GRID_POS = sorted(n for n, c in POS_ENCODINGS.items() if c.placement == "grid")


def _cases() -> list[tuple[str, str]]:
    """Every mixer with a learned absolute table and with each attention encoding it supports;
    every grid encoding with global attention."""
    cases = [(m, p) for m, cls in MIXERS.items() for p in ["abs", *sorted(cls.supported_pos & set(ATTN_POS))]]
    return cases + [("attention", p) for p in GRID_POS if p != "abs"]


def _load(spec: ArchSpec, path, img_size) -> torch.nn.Module:
    """timm's own route: a weights file described by a pretrained_cfg of the checkpoint's size."""
    cfg = dict(file=str(path), input_size=(spec.in_chans, *spec.img_hw), num_classes=spec.num_classes)
    return timm.create_model("attnnas", genome=spec.to_dict(), pretrained=True, pretrained_cfg=cfg,
                             img_size=img_size).eval()


@pytest.mark.parametrize("mixer,pos", _cases())
def test_every_grid_shaped_tensor_resamples_at_load(mixer: str, pos: str, tmp_path) -> None:
    spec = _spec(mixer, pos)
    torch.manual_seed(0)
    small = build_model(spec).eval()
    path = tmp_path / "w.safetensors"
    save_file(small.state_dict(), str(path))
    if mixer == "linformer":
        with pytest.raises(ValueError, match=r"^linformer: the checkpoint's token projection proj_k\.weight is built "
                                             r"for 8x8 tokens and cannot be resampled to 16x16"):
            _load(spec, path, 64)
        return
    big = _load(spec, path, 64)
    assert big.spec.img_size == 64 and big.pretrained_cfg["input_size"] == (3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=TOL)
    # and back down: the 64-px weights at 32 px give what the 64-px model gives at 32 px
    path64 = tmp_path / "w64.safetensors"
    save_file(big.state_dict(), str(path64))
    again = _load(big.spec, path64, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), big(x), rtol=0, atol=TOL)


def test_the_issues_example_through_an_export(tmp_path, monkeypatch) -> None:
    """Export a learned-position genome at 32 px with weights, load it with img_size=64."""
    monkeypatch.setenv("ATTNNAS_EXPORTS", str(tmp_path / "registry.json"))
    from nas.export import export_genome

    spec = ArchSpec(StemSpec("patchify", 4), (StageSpec(2, 32, "attention", {"num_heads": 2}, pos="abs"),),
                    num_classes=10, img_size=32)
    torch.manual_seed(0)
    small = build_model(spec).eval()
    folder = export_genome(spec, tmp_path / "exp", name="resize_test_net", weights=small.state_dict(),
                           register=False)
    big = timm.create_model(f"local-dir:{folder}", pretrained=True, img_size=64).eval()
    assert big.stages[0].pos.pos_embed.shape == (1, 16, 16, 32)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=TOL)


@pytest.mark.parametrize("new", [(64, 96), (64, 64), (48, 32)])
def test_rectangular_checkpoints_resample_per_side(new, tmp_path) -> None:
    spec = _spec("attention", "rel_bias", img_size=(32, 48))
    torch.manual_seed(0)
    small = build_model(spec).eval()
    path = tmp_path / "w.safetensors"
    save_file(small.state_dict(), str(path))
    big = _load(spec, path, new)
    x = torch.randn(1, 3, *new)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=TOL)


def test_filter_without_the_checkpoints_size() -> None:
    """Without the source genome a square table's grid is read from its shape; a rectangular
    relative table is ambiguous and refused in one line."""
    spec = _spec("attention", "rel_bias")
    torch.manual_seed(0)
    small = build_model(spec).eval()
    big = build_model(spec, img_size=64).eval()
    big.load_state_dict(checkpoint_filter_fn(small.state_dict(), big))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=TOL)
    rect = build_model(_spec("attention", "rel_bias", img_size=(32, 48)))
    with pytest.raises(ValueError, match="cannot tell which region a table of 345 entries was built for"):
        checkpoint_filter_fn(rect.state_dict(), big)
    # a classifier of another size is not the filter's business: left for timm's loader
    other = build_model(spec.replace(num_classes=7)).state_dict()
    assert checkpoint_filter_fn(other, small)["head.fc.weight"].shape == (7, 32)
