"""The genome: JSON round-trips, stable ids, and one test per validation rule."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from search_space import PRESETS, ArchSpec, HeadSpec, StageSpec, StemSpec


def tiny(**stage_kw) -> ArchSpec:
    stage = dict(depth=1, dim=64, mixer="attention", mixer_knobs={"num_heads": 2}, pos="none")
    stage.update(stage_kw)
    return ArchSpec(stem=StemSpec("patchify", 4), stages=(StageSpec(**stage),), num_classes=10, img_size=32)


def pyramid(*mixers, **kw) -> ArchSpec:
    stages = tuple(StageSpec(depth=1, dim=32 * 2**i, mixer=m, downsample="none" if i == 0 else "conv")
                   for i, m in enumerate(mixers))
    return ArchSpec(stem=StemSpec("overlap", 4), stages=stages, num_classes=10, img_size=kw.get("img_size", 64))


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_json_round_trip_is_exact(name):
    spec = PRESETS[name]
    text = spec.to_json()
    again = ArchSpec.from_json(text)
    assert again == spec
    assert again.to_json() == text
    assert again.arch_id == spec.arch_id
    assert ArchSpec.from_json(spec.to_json(indent=2)) == spec


def test_arch_id_is_stable_across_processes():
    spec = PRESETS["caformer_s18"]
    code = "from search_space import PRESETS; print(PRESETS['caformer_s18'].arch_id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert out == spec.arch_id
    assert len(spec.arch_id) == 40


def test_arch_id_changes_with_any_field():
    base = tiny()
    assert base.arch_id != tiny(depth=2).arch_id
    assert base.arch_id != tiny(mixer_knobs={"num_heads": 4}).arch_id
    assert base.arch_id != base.replace(img_size=64).arch_id


def test_knob_order_does_not_change_identity():
    a = tiny(mixer_knobs={"num_heads": 2, "qkv_bias": False})
    b = tiny(mixer_knobs={"qkv_bias": False, "num_heads": 2})
    assert a == b and a.arch_id == b.arch_id


def test_int_and_float_ratios_are_one_genome():
    assert tiny(mlp_ratio=4) == tiny(mlp_ratio=4.0)
    assert tiny(mlp_ratio=4).to_json() == tiny(mlp_ratio=4.0).to_json()


def test_isotropic_pyramid_and_hybrid_all_describable():
    tiny().validate()
    pyramid("pool", "sepconv").validate()
    pyramid("sepconv", "pool", "attention", "attention", img_size=128).validate()


# --- one test per validation rule --------------------------------------------------------
def test_unknown_mixer_lists_known_ones():
    with pytest.raises(ValueError, match=r"stages\[0\]\.mixer: unknown token mixer 'atention'.*did you mean 'attention'.*known: .*window"):
        tiny(mixer="atention").validate()


def test_unknown_stem_lists_known_ones():
    spec = tiny().replace(stem=StemSpec("patchfy", 4))
    with pytest.raises(ValueError, match=r"stem\.kind: unknown stem 'patchfy'.*known: .*overlap.*patchify"):
        spec.validate()


def test_unknown_position_encoding_lists_known_ones():
    with pytest.raises(ValueError, match=r"stages\[0\]\.pos: unknown position encoding 'absolute'.*known: .*abs"):
        tiny(pos="absolute").validate()


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match=r"num_heads=3 must be positive and divide the width 64"):
        tiny(mixer_knobs={"num_heads": 3}).validate()


def test_window_larger_than_the_stage_feature_map():
    # 64 px / patch 4 = 16 at stage 0; stage 1 after a stride-2 downsample sees 8x8
    spec = ArchSpec(stem=StemSpec("patchify", 4), stages=(
        StageSpec(depth=1, dim=32, mixer="window", mixer_knobs={"num_heads": 2, "window_size": 8}),
        StageSpec(depth=1, dim=64, mixer="window", mixer_knobs={"num_heads": 2, "window_size": 12},
                  downsample="patch_merging"),
    ), img_size=64)
    with pytest.raises(ValueError, match=r"stages\[1\] mixer 'window': window_size=12 is larger than the 8x8 feature map"):
        spec.validate()


def test_position_encoding_the_mixer_does_not_support():
    with pytest.raises(ValueError, match=r"mixer 'pool' does not support position encoding 'rel_bias'; allowed with it: .*abs"):
        tiny(mixer="pool", mixer_knobs={}, pos="rel_bias").validate()


@pytest.mark.parametrize("field,value", [("depth", 0), ("depth", -1), ("dim", 0), ("dim", -8)])
def test_non_positive_depth_or_width(field, value):
    with pytest.raises(ValueError, match=rf"stages\[0\]\.{field}.*must be positive"):
        tiny(**{field: value}).validate()


def test_img_size_not_divisible_by_total_stride():
    spec = pyramid("pool", "pool", "pool", img_size=72)  # stride 4 * 2 * 2 = 16
    with pytest.raises(ValueError, match=r"img_size=72 is not divisible by the total stride 16.*multiple of 16"):
        spec.validate()


def test_unknown_knob_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown knob 'num_head'.*did you mean 'num_heads'"):
        tiny(mixer_knobs={"num_head": 2}).validate()


def test_knob_of_the_wrong_type():
    with pytest.raises(ValueError, match=r"knob 'num_heads' must be int, got '2'"):
        tiny(mixer_knobs={"num_heads": "2"}).validate()


def test_first_stage_cannot_downsample():
    with pytest.raises(ValueError, match=r"stages\[0\]\.downsample must be 'none'"):
        tiny(downsample="conv").validate()


def test_unknown_field_in_json_names_the_closest():
    d = tiny().to_dict()
    d["stages"][0]["mixr"] = "attention"
    with pytest.raises(ValueError, match=r"stages\[0\]: unknown field 'mixr' \(did you mean 'mixer'\?\)"):
        ArchSpec.from_dict(d)


def test_wrong_type_in_json():
    d = tiny().to_dict()
    d["stages"][0]["depth"] = "2"
    with pytest.raises(ValueError, match=r"stages\[0\]\.depth must be int, got '2'"):
        ArchSpec.from_dict(d)


def test_malformed_json():
    with pytest.raises(ValueError, match="not valid JSON"):
        ArchSpec.from_json("{'stem': 1")


def test_head_pool_must_be_known():
    with pytest.raises(ValueError, match="head.pool must be one of avg, cls"):
        tiny().replace(head=HeadSpec("max")).validate()


def test_too_many_stages():
    stages = tuple(StageSpec(depth=1, dim=16, mixer="pool", downsample="none") for _ in range(5))
    with pytest.raises(ValueError, match="1 to 4 stages, got 5"):
        ArchSpec(stem=StemSpec("patchify", 2), stages=stages, img_size=32).validate()


def test_json_is_plain_and_sorted():
    d = json.loads(PRESETS["swin_tiny"].to_json())
    assert d["stages"][0]["mixer_knobs"] == {"num_heads": 3, "window_size": 7}
    assert d["version"] == 1


def test_position_encoding_rule_on_head_width():
    # 2D RoPE rotates pairs along x and y: the head width must be divisible by 4
    with pytest.raises(ValueError, match=r"stages\[0\]\.pos: 2D RoPE needs a head width .* divisible by 4, got 24 / 4 = 6"):
        tiny(dim=24, mixer_knobs={"num_heads": 4}, pos="rope_axial").validate()
    tiny(dim=32, mixer_knobs={"num_heads": 4}, pos="rope_axial").validate()
