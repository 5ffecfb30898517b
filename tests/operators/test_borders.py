"""Every pixel reaches the output: no stem, downsampler or mixer silently drops the last rows or
columns of a side its stride does not divide (issue 20 item 3)."""

from __future__ import annotations

import pytest
import torch

from operators import DOWNSAMPLERS, MIXERS, STEMS
from operators.base import cover_pad
from search_space import ArchSpec, StageSpec, StemSpec, build_model


def _unreached(x: torch.Tensor, out: torch.Tensor, h_axis: int, w_axis: int) -> tuple[list[int], list[int]]:
    """Rows and columns of ``x`` whose gradient from ``out.sum()`` is exactly zero everywhere."""
    (g,) = torch.autograd.grad(out.float().pow(2).sum(), x)
    g = g.abs()
    rows = g.transpose(0, h_axis).flatten(1).sum(1)
    cols = g.transpose(0, w_axis).flatten(1).sum(1)
    return [i for i, v in enumerate(rows.tolist()) if v == 0], [i for i, v in enumerate(cols.tolist()) if v == 0]


def test_cover_pad_matches_timm_dynamic_pad_for_patches() -> None:
    for size in range(1, 40):
        for p in (1, 2, 3, 4, 7, 16):
            assert cover_pad(size, p, p) == (p - size % p) % p


def test_patchify_stem_sees_the_border_of_a_34x30_image() -> None:
    """The issue's example: a patch-4 model given 34x30 pixels; the last 2 rows/cols count."""
    spec = ArchSpec(stem=StemSpec("patchify", 4), stages=(StageSpec(1, 32, "attention", {"num_heads": 2}),),
                    num_classes=5, img_size=32)
    model = build_model(spec).eval()
    x = torch.randn(1, 3, 34, 30, requires_grad=True)
    assert _unreached(x, model(x), 2, 3) == ([], [])
    # and the border pixels change the logits
    with torch.no_grad():
        y = x.detach().clone()
        y[:, :, 32:, :] += 1.0
        assert not torch.allclose(model(x), model(y))


@pytest.mark.parametrize("kind,patch,knobs", [
    ("patchify", 4, {}), ("patchify", 3, {}), ("overlap", 4, {}), ("overlap", 2, {"kernel_size": 3}),
    ("conv", 4, {}), ("t2t", 4, {"token_dim": 8}), ("t2t", 8, {"token_dim": 8}),
])
@pytest.mark.parametrize("size", [(34, 30), (33, 31), (32, 32)])
def test_every_stem_reaches_every_pixel(kind: str, patch: int, knobs: dict, size: tuple[int, int]) -> None:
    assert STEMS.get(kind).check(patch, knobs) is None
    stem = STEMS.get(kind)(3, 16, patch_size=patch, **knobs)
    x = torch.randn(1, 3, *size, requires_grad=True)
    out = stem(x)  # (B, h, w, C)
    if kind != "t2t":  # T2T's 7/4/2 split gives floor((H - 3) / 4) + 1 (+1 where a pixel would be missed)
        assert out.shape[1:3] == (-(-size[0] // patch), -(-size[1] // patch))
    assert _unreached(x, out, 2, 3) == ([], [])


def test_overlap_stem_refuses_a_kernel_that_skips_pixels() -> None:
    why = STEMS.get("overlap").check(4, {"kernel_size": 5})
    assert why is not None and "2 * patch_size - 1 = 7" in why
    assert STEMS.get("overlap").check(4, {"kernel_size": 8}) is not None  # even: the grid would be off by one
    with pytest.raises(ValueError, match="stem: kernel_size=5"):
        ArchSpec(stem=StemSpec("overlap", 4, {"kernel_size": 5}),
                 stages=(StageSpec(1, 16, "pooling"),), img_size=32).validate()


@pytest.mark.parametrize("name", DOWNSAMPLERS.names())
@pytest.mark.parametrize("grid", [(7, 5), (8, 6), (1, 3)])
def test_every_downsampler_reaches_every_token(name: str, grid: tuple[int, int]) -> None:
    ds = DOWNSAMPLERS.get(name)(8, 16)
    x = torch.randn(2, *grid, 8, requires_grad=True)
    out = ds(x)
    stride = DOWNSAMPLERS.get(name).stride
    assert out.shape[1:3] == (-(-grid[0] // stride), -(-grid[1] // stride))
    assert _unreached(x, out, 1, 2) == ([], [])


_MIXER_KNOBS = {"sra": {"sr_ratio": 4}, "twins_gsa": {"sr_ratio": 4}, "conv_proj": {"kv_stride": 3},
                "linformer": {"proj_len": 8}}


@pytest.mark.parametrize("name", MIXERS.names())
def test_every_mixer_reaches_every_token_of_an_uneven_grid(name: str) -> None:
    """A 11x9 grid that no window, stride or sr_ratio divides: every token reaches the output."""
    grid = (11, 9)
    cls = MIXERS.get(name)
    knobs = dict(_MIXER_KNOBS.get(name, {}))
    if "num_heads" in cls.knobs():
        knobs.setdefault("num_heads", 2)
    assert cls.check(32, grid, knobs) is None
    torch.manual_seed(0)
    mixer = cls(32, grid_size=grid, **knobs).eval()
    x = torch.randn(1, *grid, 32, requires_grad=True)
    out = mixer(x)
    # the output of the *first* token must depend on inputs from the far border too only for global
    # mixers; what every mixer must do is let each input token reach some output
    assert _unreached(x, out, 1, 2) == ([], [])


def test_conv_proj_refuses_a_stride_past_its_kernel() -> None:
    why = MIXERS.get("conv_proj").check(32, (8, 8), {"kernel_size": 3, "kv_stride": 4, "num_heads": 2})
    assert why is not None and "kv_stride=4" in why


@pytest.mark.parametrize("name", ["attention", "sra", "twins_gsa", "sra_linear", "conv_proj"])
def test_global_mixers_keys_cover_every_token(name: str) -> None:
    """Keys and values of a global mixer come from every token, even where the reduction stride
    (sr_ratio, kv_stride) does not divide the side: the first query's output depends on all."""
    grid = (11, 9)
    cls = MIXERS.get(name)
    knobs = {"num_heads": 2, **_MIXER_KNOBS.get(name, {})}
    torch.manual_seed(0)
    mixer = cls(32, grid_size=grid, **knobs).eval()
    x = torch.randn(1, *grid, 32, requires_grad=True)
    out = mixer(x)[:, 0, 0]  # the first query only: other tokens reach it through keys/values
    assert _unreached(x, out, 1, 2) == ([], [])
