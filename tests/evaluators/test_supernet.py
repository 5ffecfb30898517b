from __future__ import annotations

import itertools
import random

import pytest
import torch

from evaluators.data import DataSpec, load_dataset
from evaluators.proxy import ProxyConfig
from evaluators.supernet import (
    MixerConfig,
    SlotSpec,
    SupernetSpace,
    SupernetTrainer,
    WeightBank,
    _slice,
    score_path,
)
from search_space.genome import ArchSpec, StageSpec, StemSpec

IMG, CLASSES = 8, 10
MIXERS = [("attention", {"num_heads": 1}), ("attention", {"num_heads": 2}), ("sepconv", {"kernel_size": 3}),
          ("sepconv", {"kernel_size": 5}), ("pool", {})]


def small_space() -> SupernetSpace:
    mixers = []
    for slot, grid in ((0, 4), (1, 2)):
        for m, k in MIXERS:
            mixers.append(MixerConfig(slot, grid, m, tuple(sorted(k.items()))))
    return SupernetSpace(img_size=IMG, in_chans=3, num_classes=CLASSES,
                         stems=(("patchify", 2, ()), ("conv", 2, ())),
                         slots=(SlotSpec(16, 2, (4,)), SlotSpec(32, 1, (2,))), mixers=tuple(mixers),
                         pos=("none", "rel_bias"), mlp=("mlp", "glu"), max_mlp_ratio=4.0,
                         downsample=("conv", "patch_merging"), head_pool=("avg", "cls"))


def stage(depth, dim, mixer, ds="none", pos="none", mlp="mlp", ratio=4.0):
    name, knobs = mixer
    pos = pos if name == "attention" else "none"
    return StageSpec(depth=depth, dim=dim, mixer=name, mixer_knobs=knobs, pos=pos, mlp=mlp, mlp_ratio=ratio,
                     downsample=ds)


def all_genomes() -> list[ArchSpec]:
    """Every genome of the small space over its main axes (stem, stages, mixer + knobs per stage,
    width, depth; position, MLP kind and ratio, downsampler and head pool alternate)."""
    out = []
    for i, (stem, m0, dim0, depth0) in enumerate(itertools.product(
            ("patchify", "conv"), MIXERS, (8, 16), (1, 2))):
        s0 = stage(depth0, dim0, m0, pos=("none", "rel_bias")[i % 2], mlp=("mlp", "glu")[i // 2 % 2],
                   ratio=(2.0, 4.0)[i // 4 % 2])
        out.append(ArchSpec(StemSpec(stem, 2), (s0,), num_classes=CLASSES, img_size=IMG))
        m1 = MIXERS[i % len(MIXERS)]
        s1 = stage(1, (16, 32)[i % 2], m1, ds=("conv", "patch_merging")[i // 3 % 2], pos="rel_bias")
        from search_space.genome import HeadSpec

        out.append(ArchSpec(StemSpec(stem, 2), (s0, s1), head=HeadSpec(("avg", "cls")[i % 2]),
                            num_classes=CLASSES, img_size=IMG))
    return [g.validate() for g in out]


@pytest.fixture(scope="module")
def bank():
    return WeightBank(small_space())


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataSpec(img_size=IMG, subset=96, val_size=48))


def test_every_genome_maps_and_the_extracted_subnet_matches_the_path(bank):
    genomes = all_genomes()
    assert len(genomes) == 80
    x = torch.randn(2, 3, IMG, IMG)
    bank.eval()
    for n, g in enumerate(genomes):
        plan = bank.plan(g)
        assert set(plan.params) == {k for k, _ in plan.model.named_parameters()}
        if n % 5 == 0:  # outputs on a spread subset (every mixer, both stems and heads)
            with torch.no_grad():
                want = bank.forward_path(g, x)
                got = bank.extract(g).eval()(x)
            assert got.shape == (2, CLASSES)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_different_mixer_kinds_and_shape_changing_knobs_get_separate_weights(bank):
    keys = list(bank.shapes)
    assert any(".mixer.attention." in k for k in keys) and any(".mixer.sepconv." in k for k in keys)
    # kernel size changes the depthwise kernel: one tensor per value
    dw = [k for k in keys if k.startswith("s0.b0.mixer.sepconv.") and k.endswith("dwconv.weight")]
    assert sorted(dw) == ["s0.b0.mixer.sepconv.kernel_size=3.dwconv.weight",
                          "s0.b0.mixer.sepconv.kernel_size=5.dwconv.weight"]
    # head count changes no projection's shape: shared (entangled) across heads
    assert "s0.b0.mixer.attention.-.qkv.weight" in keys
    # a position table sized from the grid is keyed by the encoding
    assert any(k.startswith("s0.b0.mixer.attention.") and "pos=rel_bias" in k for k in keys)


def test_a_smaller_width_uses_the_leading_slices_of_the_largest_weights(bank):
    g = ArchSpec(StemSpec("patchify", 2), (stage(1, 8, ("attention", {"num_heads": 2}), ratio=2.0),),
                 num_classes=CLASSES, img_size=IMG)
    plan = bank.plan(g)
    p = bank.path_params(plan)
    qkv = bank.weights["s0/b0/mixer/attention/-/qkv/weight"]  # (3 x 16, 16)
    assert qkv.shape == (48, 16)
    want = torch.cat([qkv[0:8, :8], qkv[16:24, :8], qkv[32:40, :8]])  # q, k, v: each its leading rows
    torch.testing.assert_close(p["stages.0.blocks.0.mixer.qkv.weight"], want, rtol=0, atol=0)
    fc1 = bank.weights["s0/b0/mlp/mlp/fc1/weight"]  # (4 x 16, 16); ratio 2 at width 8: hidden 16
    torch.testing.assert_close(p["stages.0.blocks.0.mlp.fc1.weight"], fc1[:16, :8], rtol=0, atol=0)
    torch.testing.assert_close(p["stem.proj.weight"], bank.weights["stem/patchify/p2/-/proj/weight"][:8])
    # gradients of the small path land in those slices only
    bank.zero_grad(set_to_none=True)
    bank.train()
    bank.forward_path(g, torch.randn(2, 3, IMG, IMG)).sum().backward()
    grad = bank.weights["s0/b0/mlp/mlp/fc1/weight"].grad
    assert grad[:16, :8].abs().sum() > 0 and grad[16:].abs().sum() == 0 and grad[:, 8:].abs().sum() == 0
    bank.zero_grad(set_to_none=True)


def test_chunked_slice_of_a_fused_projection():
    big = torch.arange(6 * 3, dtype=torch.float32).view(6, 3)  # 3 chunks of width 2, in-width 3
    got = _slice(big, (3, 2), ((2, 1),))
    torch.testing.assert_close(got, big[[0, 2, 4]][:, :2])


def test_a_genome_outside_the_space_is_refused_in_one_line(bank):
    wide = ArchSpec(StemSpec("patchify", 2), (stage(1, 24, ("pool", {})),), num_classes=CLASSES, img_size=IMG)
    with pytest.raises(ValueError, match="exceeds the supernet slot"):
        bank.plan(wide)
    other = ArchSpec(StemSpec("patchify", 2), (stage(1, 16, ("window", {"window_size": 2})),),
                     num_classes=CLASSES, img_size=IMG)
    with pytest.raises(ValueError, match="not among the supernet's slot-0 mixers"):
        bank.plan(other)
    knob = ArchSpec(StemSpec("patchify", 2), (stage(1, 16, ("sepconv", {"kernel_size": 7})),),
                    num_classes=CLASSES, img_size=IMG)
    with pytest.raises(ValueError, match="does not map") as e:
        bank.plan(knob)
    assert "\n" not in str(e.value)


def _sampler(rng: random.Random) -> ArchSpec:
    return rng.choice(all_genomes())


def _train(data, tmp_path, name, **fit):
    bank = WeightBank(small_space())
    cfg = ProxyConfig(batch_size=16, lr=2e-3, device="cpu", count_flops=False)
    tr = SupernetTrainer(cfg, steps=6, paths_per_step=2, strategy="sandwich", checkpoint=tmp_path / name,
                         checkpoint_every=2, progress=False)
    return bank, tr, tr.fit(bank, data, _sampler, **fit)


def test_interrupted_training_resumes_to_the_same_weights(data, tmp_path):
    full, _, res = _train(data, tmp_path, "full.pt")
    assert res.steps == 6 and res.resumed_from == 0 and res.paths == 12

    _, _, part = _train(data, tmp_path, "cut.pt", stop_after=3)
    assert part.steps == 3

    class Crash(Exception):
        pass

    def crash(step, loss):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):  # a crash after step 5: the checkpoint holds step 4
        _train(data, tmp_path, "cut.pt", on_step=crash)
    resumed, _, res2 = _train(data, tmp_path, "cut.pt")
    assert res2.resumed_from == 4 and res2.steps == 6
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_checkpoint_of_another_recipe_is_refused(data, tmp_path):
    _train(data, tmp_path, "a.pt", stop_after=2)
    bank = WeightBank(small_space())
    tr = SupernetTrainer(ProxyConfig(batch_size=8, device="cpu"), steps=6, checkpoint=tmp_path / "a.pt",
                         progress=False)
    with pytest.raises(ValueError, match="another space or recipe"):
        tr.fit(bank, data, _sampler)


def test_scoring_recalibrates_batchnorm_only_where_the_path_has_it(bank, data):
    conv = ArchSpec(StemSpec("conv", 2), (stage(1, 16, ("pool", {})),), num_classes=CLASSES, img_size=IMG)
    patch = ArchSpec(StemSpec("patchify", 2), (stage(1, 16, ("pool", {})),), num_classes=CLASSES, img_size=IMG)
    cfg = ProxyConfig(batch_size=16, device="cpu", count_flops=False)
    s1, m1 = score_path(bank, conv, data, cfg)
    s2, _ = score_path(bank, patch, data, cfg)
    assert s1.recalibrated and not s2.recalibrated
    assert 0.0 <= s1.accuracy <= 1.0 and s1.seconds > 0
    bn = next(m for m in m1.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.num_batches_tracked > 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
