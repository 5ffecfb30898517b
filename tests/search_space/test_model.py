"""NasNet as a first-class timm model, and the presets against timm's own models."""

from __future__ import annotations

import pytest
import timm
import torch

from search_space import PRESET_TIMM, PRESETS, ArchSpec, StageSpec, StemSpec, build_model


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_params_match_timm_within_2_percent(name):
    ours = n_params(build_model(PRESETS[name]))
    with torch.device("meta"):
        theirs = n_params(timm.create_model(PRESET_TIMM[name]))
    assert abs(ours - theirs) / theirs < 0.02, f"{name}: {ours} vs timm {theirs}"


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_builds_and_runs_on_a_small_input(name):
    model = build_model(PRESETS[name], num_classes=7).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 64))  # built for 224: tables and pos-embeds resize
    assert y.shape == (1, 7) and torch.isfinite(y).all()


def small_pyramid() -> ArchSpec:
    return ArchSpec(stem=StemSpec("overlap", 4), stages=(
        StageSpec(depth=1, dim=16, mixer="sepconv"),
        StageSpec(depth=1, dim=32, mixer="window", mixer_knobs={"num_heads": 2, "window_size": 4}, pos="rel_bias",
                  downsample="patch_merging"),
        StageSpec(depth=2, dim=64, mixer="attention", mixer_knobs={"num_heads": 2}, pos="abs", downsample="conv",
                  layer_scale=1e-5),
    ), num_classes=5, img_size=64)


def test_features_only_and_intermediates_match_stage_outputs():
    spec = small_pyramid()
    torch.manual_seed(0)
    model = build_model(spec).eval()
    torch.manual_seed(0)
    feats = build_model(spec, features_only=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # the real stage outputs, by running the stages by hand
        h, expected = model.stem(x), []
        for stage in model.stages:
            h = stage(h)
            expected.append(h.permute(0, 3, 1, 2))
        inter = model.forward_intermediates(x, intermediates_only=True)
        final, inter2 = model.forward_intermediates(x)
        maps = feats(x)
        features = model.forward_features(x)
    assert feats.feature_info.channels() == [16, 32, 64]
    assert feats.feature_info.reduction() == [4, 8, 16]
    for e, a, b, c in zip(expected, inter, inter2, maps):
        assert torch.allclose(e, a) and torch.allclose(e, b) and torch.allclose(e, c, atol=1e-6)
    assert torch.allclose(final, features, atol=1e-6)
    assert [m.shape[1] for m in maps] == [16, 32, 64]
    assert [m.shape[-1] for m in maps] == [16, 8, 4]


def test_intermediate_indices_and_stop_early():
    model = build_model(small_pyramid()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last = model.forward_intermediates(x, indices=1, intermediates_only=True)
        sel = model.forward_intermediates(x, indices=[0, 2], intermediates_only=True, stop_early=True)
    assert len(last) == 1 and last[0].shape[1] == 64
    assert [t.shape[1] for t in sel] == [16, 64]


def test_timm_interface():
    model = build_model(small_pyramid())
    assert model.num_classes == 5 and model.num_features == 64
    assert model.get_classifier().out_features == 5
    model.reset_classifier(0)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 64)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 64)
    nwd = model.no_weight_decay()
    assert "stages.2.pos.pos_embed" in nwd
    assert any(n.endswith("pos.table") for n in nwd)
    assert all(n in dict(model.named_parameters()) for n in nwd)


def test_grad_checkpointing_gives_the_same_gradients():
    spec = small_pyramid()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model(spec)
        model.set_grad_checkpointing(ckpt)
        model(x).sum().backward()
        grads.append(model.stages[2].blocks[0].mixer.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_timm_create_model_for_presets_and_genomes():
    import search_space.builder  # noqa: F401  (registers with timm)

    assert "attnnas_swin_tiny" in timm.list_models("attnnas*")
    m = timm.create_model("attnnas", genome=small_pyramid().to_dict(), num_classes=3)
    assert m.num_classes == 3 and m.pretrained_cfg["num_classes"] == 3
    assert m.pretrained_cfg["input_size"] == (3, 64, 64)
    assert m.pretrained_cfg["first_conv"] == "stem.proj" and m.pretrained_cfg["classifier"] == "head.fc"
    m2 = timm.create_model("attnnas", genome=small_pyramid().to_json(), in_chans=1, img_size=32)
    assert m2(torch.randn(1, 1, 32, 32)).shape == (1, 5)


def test_cls_head_and_mlp_head():
    spec = small_pyramid()
    for head in (spec.head.__class__("cls"), spec.head.__class__("avg", mlp_ratio=2.0)):
        m = build_model(spec.replace(head=head))
        assert m(torch.randn(2, 3, 64, 64)).shape == (2, 5)
        m.reset_classifier(0)
        assert m(torch.randn(2, 3, 64, 64)).shape == (2, 64)


def test_bad_genome_gives_a_value_error_not_a_torch_traceback():
    bad = small_pyramid().replace(img_size=60)
    with pytest.raises(ValueError, match="not divisible by the total stride 16"):
        build_model(bad)
    with pytest.raises(ValueError, match="needs genome"):
        timm.create_model("attnnas")
