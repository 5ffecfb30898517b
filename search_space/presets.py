"""Known architectures written as genomes (224 px, 1000 classes).

Each preset names the timm model it reproduces in ``PRESET_TIMM``; a test checks the
parameter counts agree within 2% and the FLOPs within 3%. Differences that remain are noted
per preset (for example DeiT's class token is replaced by average pooling).
"""

from __future__ import annotations

from operators.errors import did_you_mean
from search_space.genome import ArchSpec, HeadSpec, StageSpec, StemSpec


def _pyramid(stem: StemSpec, depths, dims, mixers, knobs, pos="none", mlp="mlp", ratios=(4, 4, 4, 4),
             downsample="conv", layer_scale=None, head: HeadSpec | None = None) -> ArchSpec:
    stages = tuple(
        StageSpec(depth=d, dim=c, mixer=m, mixer_knobs=k, pos=pos, mlp=mlp, mlp_ratio=float(r),
                  downsample="none" if i == 0 else downsample, layer_scale=layer_scale)
        for i, (d, c, m, k, r) in enumerate(zip(depths, dims, mixers, knobs, ratios))
    )
    return ArchSpec(stem=stem, stages=stages, head=head or HeadSpec())


def _vit(dim: int, depth: int, heads: int) -> ArchSpec:
    """DeiT (Touvron et al. 2021): global attention, learned absolute positions; average
    pooling stands in for the class token (one token fewer: -0.5% FLOPs, -384 params)."""
    return ArchSpec(stem=StemSpec("patchify", 16),
                    stages=(StageSpec(depth=depth, dim=dim, mixer="attention", mixer_knobs={"num_heads": heads},
                                      pos="abs"),))


def _swin_tiny() -> ArchSpec:
    """Swin-T (Liu et al. 2021): shifted 7x7 windows, relative position bias, patch merging."""
    return _pyramid(StemSpec("patchify", 4, {"norm": True}), (2, 2, 6, 2), (96, 192, 384, 768), ["window"] * 4,
                    [{"num_heads": h, "window_size": 7} for h in (3, 6, 12, 24)], pos="rel_bias",
                    downsample="patch_merging")


def _pvt_v2(dims, depths, heads=(1, 2, 5, 8)) -> ArchSpec:
    """PVTv2 (Wang et al. 2022): spatial-reduction attention (R = 8, 4, 2, 1), ConvFFN, overlapping
    patch embeddings; no explicit position encoding."""
    return _pyramid(StemSpec("overlap", 4, {"kernel_size": 7}), depths, dims, ["sra"] * 4,
                    [{"num_heads": h, "sr_ratio": r} for h, r in zip(heads, (8, 4, 2, 1))],
                    mlp="convffn", ratios=(8, 8, 4, 4))


_METAFORMER_STEM = StemSpec("overlap", 4, {"kernel_size": 7})
_METAFORMER_DIMS = (64, 128, 320, 512)


def _poolformer_s12() -> ArchSpec:
    """PoolFormer-S12 (Yu et al. 2022): 3x3 average pooling mixer, LayerScale."""
    return _pyramid(_METAFORMER_STEM, (2, 2, 6, 2), _METAFORMER_DIMS, ["pool"] * 4, [{}] * 4, layer_scale=1e-5)


def _convformer_s18() -> ArchSpec:
    """ConvFormer-S18 (Yu et al. 2023): separable conv mixer in every stage, MLP head."""
    return _pyramid(_METAFORMER_STEM, (3, 3, 9, 3), _METAFORMER_DIMS, ["sepconv"] * 4, [{}] * 4,
                    head=HeadSpec("avg", mlp_ratio=4.0))


def _caformer_s18() -> ArchSpec:
    """CAFormer-S18 (Yu et al. 2023): separable conv in stages 1-2, attention (head dim 32,
    no qkv bias) in stages 3-4, MLP head: a hybrid."""
    attn = lambda c: {"num_heads": c // 32, "qkv_bias": False, "proj_bias": False}  # noqa: E731
    return _pyramid(_METAFORMER_STEM, (3, 3, 9, 3), _METAFORMER_DIMS, ["sepconv", "sepconv", "attention", "attention"],
                    [{}, {}, attn(320), attn(512)], head=HeadSpec("avg", mlp_ratio=4.0))


PRESETS: dict[str, ArchSpec] = {
    "deit_tiny": _vit(192, 12, 3),
    "deit_small": _vit(384, 12, 6),
    "swin_tiny": _swin_tiny(),
    "pvt_v2_b0": _pvt_v2((32, 64, 160, 256), (2, 2, 2, 2)),
    "pvt_v2_b1": _pvt_v2((64, 128, 320, 512), (2, 2, 2, 2)),
    "poolformer_s12": _poolformer_s12(),
    "convformer_s18": _convformer_s18(),
    "caformer_s18": _caformer_s18(),
}

PRESET_TIMM: dict[str, str] = {
    "deit_tiny": "deit_tiny_patch16_224",
    "deit_small": "deit_small_patch16_224",
    "swin_tiny": "swin_tiny_patch4_window7_224",
    "pvt_v2_b0": "pvt_v2_b0",
    "pvt_v2_b1": "pvt_v2_b1",
    "poolformer_s12": "poolformer_s12",
    "convformer_s18": "convformer_s18",
    "caformer_s18": "caformer_s18",
}


def get_preset(name: str) -> ArchSpec:
    """The preset genome ``name``; a ``ValueError`` lists the known ones."""
    if name not in PRESETS:
        hint = did_you_mean(name, PRESETS)
        raise ValueError(f"unknown preset {name!r}{hint}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]
