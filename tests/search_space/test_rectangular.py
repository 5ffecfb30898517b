"""Rectangular inputs: every entry point that takes an image size honours (H, W) (issue 13 item 2)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.data import resolve_data_config

import search_space.builder  # noqa: F401 - registers attnnas with timm
from search_space import ArchSpec, StageSpec, StemSpec, build_model


def _spec(**kw) -> ArchSpec:
    return ArchSpec(stem=StemSpec("patchify", 4), stages=(
        StageSpec(1, 32, "window", {"num_heads": 2, "window_size": 4}, pos="rel_bias"),
        StageSpec(1, 64, "attention", {"num_heads": 2}, pos="abs", downsample="patch_merging"),
    ), num_classes=5, **kw)


def test_create_model_honours_h_and_w() -> None:
    """The issue's example: img_size=(32, 48) builds a 32x48 model and timm's data config says so."""
    model = timm.create_model("attnnas", genome=_spec(img_size=32).to_dict(), img_size=(32, 48))
    assert model.spec.img_size == (32, 48) and model.spec.img_hw == (32, 48)
    assert model.pretrained_cfg["input_size"] == (3, 32, 48)
    assert resolve_data_config(model=model)["input_size"] == (3, 32, 48)
    assert model.stages[1].pos.pos_embed.shape[1:3] == (4, 6)  # the grid is 32/8 x 48/8
    assert model.stages[0].blocks[0].mixer.pos.grid_size == (4, 4)  # a window, whatever the image
    feats = model.forward_intermediates(torch.randn(2, 3, 32, 48), intermediates_only=True)
    assert [f.shape[-2:] for f in feats] == [(8, 12), (4, 6)]
    assert model(torch.randn(2, 3, 32, 48)).shape == (2, 5)


@pytest.mark.parametrize("size", [(32, 48), [32, 48]])
def test_genome_and_build_model_take_h_w(size) -> None:
    spec = _spec(img_size=size)
    assert spec.img_size == (32, 48)
    assert spec.stage_grids() == [(8, 12), (4, 6)]
    d = json.loads(spec.to_json())
    assert d["img_size"] == [32, 48]
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert build_model(_spec(img_size=32), img_size=size).spec.img_size == (32, 48)
    # a square given as a pair is the square (one canonical form, one arch_id)
    assert _spec(img_size=(32, 32)).img_size == 32 and _spec(img_size=(32, 32)).arch_id == _spec(img_size=32).arch_id
    assert spec.arch_id != _spec(img_size=(48, 32)).arch_id


def test_non_divisible_side_and_bad_sizes_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"img_size=32x44 is not divisible by the total stride 8.*on each side"):
        _spec(img_size=(32, 44)).validate()
    with pytest.raises(ValueError, match=r"img_size must be an int \(a square\) or \[H, W\]"):
        _spec(img_size=(32, 48, 3)).validate()
    with pytest.raises(ValueError, match=r"genome.img_size must be int \(a square\) or \[H, W\], got 'big'"):
        ArchSpec.from_dict({**_spec().to_dict(), "img_size": "big"})
    with pytest.raises(ValueError, match=r"img_size must be N \(a square\) or \(H, W\)"):
        build_model(_spec(img_size=32), img_size=(32, 48, 1))


def test_cost_evaluators_and_screening_use_both_sides() -> None:
    from evaluators import count_flops, screen, training_memory
    from evaluators.latency import measure_latency

    rect, square = _spec(img_size=(32, 48)), _spec(img_size=32)
    flops_rect = int(count_flops(build_model(rect), input_size=(3, 32, 48)))
    assert screen(rect).flops == flops_rect
    assert screen(square, img_size=(32, 48)).flops == flops_rect
    assert flops_rect > screen(square).flops
    lat = measure_latency(rect, warmup=1, repeats=2)
    assert lat.img_size == (32, 48)
    mem = training_memory(rect, 2)
    assert mem.img_size == (32, 48) and mem.activations_bytes > training_memory(square, 2).activations_bytes


def test_profile_takes_hxw_and_a_rectangular_genome(tmp_path, capsys) -> None:
    from nas.cli import main

    path = tmp_path / "g.json"
    path.write_text(_spec(img_size=(32, 48)).to_json())
    assert main(["profile", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["img_size"] == [32, 48]
    assert d["flops"] == int(__import__("evaluators").count_flops(build_model(_spec(img_size=(32, 48))),
                                                                   input_size=(3, 32, 48)))
    path.write_text(_spec(img_size=32).to_json())
    assert main(["profile", str(path), "--img-size", "32x48", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flops"] == d["flops"]
    assert main(["profile", str(path), "--img-size", "32x32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["img_size"] == 32
    with pytest.raises(SystemExit):
        main(["profile", str(path), "--img-size", "32x48x3"])
    assert "--img-size must be N or HxW" in capsys.readouterr().err
    assert main(["profile", str(path), "--img-size", "48x32"]) == 0
    assert "(genome, 48x32)" in capsys.readouterr().out


def test_export_of_a_rectangular_genome_loads_at_h_w(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNNAS_EXPORTS", str(tmp_path / "registry.json"))
    from nas.export import export_genome

    spec = _spec(img_size=(32, 48))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    folder = export_genome(spec, tmp_path / "rect", name="rect_test_net", weights=model.state_dict(),
                           register=False)
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert loaded.pretrained_cfg["input_size"] == (3, 32, 48)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert "3 x 32 x 48" in (folder / "README.md").read_text()


def test_study_file_refuses_a_non_square_img_size_in_one_line() -> None:
    """A study's data are square (the dataset is resized to img_size x img_size): [H, W] is refused."""
    from nas.errors import NasError
    from nas.study import parse_study
    from nas.testing import tiny_study_text

    with pytest.raises(NasError) as e:
        parse_study(tiny_study_text().replace("img_size = 16", "img_size = [16, 24]"))
    assert "img_size" in str(e.value) and "\n" not in str(e.value)
