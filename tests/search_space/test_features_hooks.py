"""A ``features_only`` model keeps every training hook of the classifier (issue 13 item 5)."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import group_parameters
from timm.optim import create_optimizer_v2

from search_space import ArchSpec, StageSpec, StemSpec, build_model
from search_space.builder import TRAINING_HOOKS


def _spec() -> ArchSpec:
    return ArchSpec(stem=StemSpec("patchify", 4), stages=(
        StageSpec(1, 16, "sepconv"),
        StageSpec(2, 32, "attention", {"num_heads": 2}, pos="abs", downsample="patch_merging", layer_scale=1e-5),
    ), num_classes=5, img_size=32)


@pytest.fixture(params=["build_model", "create_model", "export"])
def features(request, tmp_path, monkeypatch):
    spec = _spec()
    if request.param == "build_model":
        return build_model(spec, features_only=True)
    if request.param == "create_model":
        return timm.create_model("attnnas", genome=spec.to_dict(), features_only=True)
    monkeypatch.setenv("ATTNNAS_EXPORTS", str(tmp_path / "registry.json"))
    from nas.export import export_genome

    folder = export_genome(spec, tmp_path / "exp", name="hooks_test_net", weights=build_model(spec).state_dict(),
                           register=False, self_check=False)
    return timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True)


def test_features_model_offers_every_training_hook(features) -> None:
    full = build_model(_spec())
    for hook in TRAINING_HOOKS:
        assert callable(getattr(full, hook)) and callable(getattr(features, hook)), hook

    # no_weight_decay names real parameters of the wrapper: the position table and LayerScale gammas' peers
    names = dict(features.named_parameters())
    nwd = features.no_weight_decay()
    assert nwd and nwd <= set(names)
    assert {n.removeprefix("model.") for n in nwd} <= set(full.no_weight_decay())

    # group_matcher covers every parameter, in the same groups as the classifier's (minus its head)
    groups = group_parameters(features, features.group_matcher(coarse=False))
    grouped = {n for g in groups.values() for n in g}
    assert grouped == set(names)
    full_groups = group_parameters(full, full.group_matcher(coarse=False))
    kept = [{n for n in g if not n.startswith(("head.", "norm."))} for g in full_groups.values()]
    assert sorted(map(sorted, filter(None, kept))) == sorted(
        sorted(n.removeprefix("model.") for n in g) for g in groups.values())
    # a stage's position table is grouped with its stage, not left over with the classifier
    pos_group = next(g for g in full_groups.values() if "stages.1.pos.pos_embed" in g)
    assert "stages.1.downsample.reduction.weight" in pos_group and "head.fc.weight" not in pos_group

    # the optimizer factory uses both (weight decay split, layer decay)
    opt = create_optimizer_v2(features, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)

    # gradient checkpointing reaches the stages and training still works
    features.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in features.model.stages)
    features.train()
    out = features(torch.randn(2, 3, 32, 32))
    sum(o.float().pow(2).mean() for o in out).backward()
    assert all(p.grad is not None for p in features.parameters() if p.requires_grad)
    features.set_grad_checkpointing(False)
    assert not any(s.grad_checkpointing for s in features.model.stages)
