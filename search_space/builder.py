"""Genome -> ``NasNet``, a first-class timm model.

``build_model(spec)`` goes through timm's ``build_model_with_cfg`` so ``features_only=True``,
``pretrained_cfg`` and the rest of timm's machinery work; every genome is also reachable as
``timm.create_model("attnnas", genome=spec.to_dict())`` and every preset as
``timm.create_model("attnnas_<preset>")``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import FeatureGetterNet, feature_take_indices
from timm.models._manipulate import checkpoint_seq
from torch import nn

from operators.block import UnifiedBlock
from operators.heads import ClassifierHead
from operators.registry import (
    CHANNEL_ATTNS,
    CHANNEL_MLPS,
    DOWNSAMPLERS,
    MIXERS,
    POS_ENCODINGS,
    STEMS,
)
from search_space.genome import ArchSpec, ImgSize, img_hw, img_size_value

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WEIGHT_SOURCE_KEYS = ("file", "url", "state_dict", "hf_hub_id")  # where timm's pretrained_cfg finds weights
_CHECKPOINT_EXTS = (".safetensors", ".pth", ".pth.tar", ".pt", ".bin", ".ckpt")  # what timm's local-dir loads


class NasStage(nn.Module):
    """downsample -> grid position encoding -> ``depth`` unified blocks, all ``(B, H, W, C)``."""

    def __init__(self, in_dim: int, spec, grid: tuple[int, int], drop_path: list[float]) -> None:
        super().__init__()
        self.downsample = DOWNSAMPLERS.get(spec.downsample)(in_dim, spec.dim)
        pos_cls = POS_ENCODINGS.get(spec.pos)
        self.pos = pos_cls(spec.dim, grid_size=grid) if pos_cls.placement == "grid" else nn.Identity()
        attn_pos = spec.pos if pos_cls.placement == "attention" else "none"
        # the block gets classes (timm MetaFormer style): the names are resolved here, once per stage
        mixer_cls, mlp_cls = MIXERS.get(spec.mixer), CHANNEL_MLPS.get(spec.mlp)
        channel_attn_cls = None if spec.channel_attn == "none" else CHANNEL_ATTNS.get(spec.channel_attn)
        self.blocks = nn.Sequential(*[
            UnifiedBlock(spec.dim, token_mixer=mixer_cls, mixer_knobs=spec.knob_dict, grid_size=grid,
                         pos_encoding=attn_pos, block_index=i, mlp_layer=mlp_cls, mlp_ratio=spec.mlp_ratio,
                         layer_scale=spec.layer_scale, channel_attn_layer=channel_attn_cls, drop_path=dp)
            for i, dp in enumerate(drop_path)
        ])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.downsample(x))  # (B, H, W, C)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class NasNet(nn.Module):
    """A backbone built from an ``ArchSpec``; channels-last inside, timm's interface outside.

    ``forward_features`` returns the normed final grid ``(B, H, W, C)`` (like timm's Swin);
    ``features_only``/``forward_intermediates`` return ``(B, C, H, W)`` maps, one per stage.
    """

    def __init__(
        self,
        spec: ArchSpec | dict[str, Any] | str,
        num_classes: int | None = None,
        in_chans: int | None = None,
        img_size: int | tuple[int, int] | None = None,
        drop_rate: float | None = None,
        drop_path_rate: float = 0.0,
        global_pool: str | None = None,
    ) -> None:
        super().__init__()
        spec = _as_spec(spec)
        changes: dict[str, Any] = {}
        if num_classes is not None:
            changes["num_classes"] = int(num_classes)
        if in_chans is not None:
            changes["in_chans"] = int(in_chans)
        if img_size is not None:
            changes["img_size"] = _img_size_arg(img_size)
        if global_pool in ("avg", "cls"):
            changes["head"] = spec.head.__class__(global_pool, spec.head.mlp_ratio, spec.head.drop_rate)
        if drop_rate is not None:
            changes["head"] = spec.head.__class__(changes.get("head", spec.head).pool, spec.head.mlp_ratio, drop_rate)
        spec = spec.replace(**changes).validate() if changes else spec.validate()
        self.spec = spec
        self.num_classes = spec.num_classes
        self.in_chans = spec.in_chans
        self.num_features = self.head_hidden_size = spec.stages[-1].dim
        self.grad_checkpointing = False

        self.stem = STEMS.get(spec.stem.kind)(spec.in_chans, spec.stages[0].dim, patch_size=spec.stem.patch_size,
                                              **spec.stem.knob_dict)
        grids = spec.stage_grids()
        depths = [s.depth for s in spec.stages]
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # also under meta
        stages, in_dim, stride, self.feature_info = [], spec.stages[0].dim, spec.stem.patch_size, []
        for i, (s, grid) in enumerate(zip(spec.stages, grids)):
            stride *= DOWNSAMPLERS.get(s.downsample).stride if i else 1
            start = sum(depths[:i])
            stages.append(NasStage(in_dim, s, grid, rates[start:start + s.depth]))
            self.feature_info.append(dict(num_chs=s.dim, reduction=stride, module=f"stages.{i}"))
            in_dim = s.dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features)
        heads = next((v for s in spec.stages[::-1] for k, v in s.mixer_knobs if k == "num_heads"), 1)
        self.head = ClassifierHead(self.num_features, spec.num_classes, pool=spec.head.pool,
                                   mlp_ratio=spec.head.mlp_ratio, drop_rate=spec.head.drop_rate, num_heads=heads)
        self.apply(_init_weights)
        self.register_load_state_dict_pre_hook(fill_tied_entries)  # de-duplicated checkpoints load strictly

    # --- timm interface ----------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = set()
        for mod_name, mod in self.named_modules():
            for p in getattr(mod, "no_weight_decay_params", ()):
                names.add(f"{mod_name}.{p}" if mod_name else p)
        return names

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.(?:downsample|pos)", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None and global_pool not in ("avg", "cls", ""):
            raise ValueError(f"global_pool must be 'avg' or 'cls', got {global_pool!r}")
        self.head.reset(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, H/p, W/p, C0)
        x = self.stages(x)  # (B, h, w, C)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)  # (B, num_classes) or (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs as ``(B, C, H, W)`` (or ``NHWC``), optionally with the final features."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError("output_fmt must be 'NCHW' or 'NHWC'")
        take, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        last = len(self.stages) - 1
        for i, stage in enumerate(stages):
            x = stage(x)  # (B, H, W, C)
            if i in take:
                y = self.norm(x) if norm and i == last else x
                intermediates.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


TRAINING_HOOKS = ("set_grad_checkpointing", "no_weight_decay", "group_matcher")


class NasFeatureNet(FeatureGetterNet):
    """timm's ``FeatureGetterNet`` (``features_only=True``) that keeps the wrapped ``NasNet``'s
    training hooks: ``set_grad_checkpointing``, ``no_weight_decay`` and ``group_matcher`` answer
    for the wrapper's own parameter names (``model.<name>``), so timm's optimizer factory, layer
    decay and gradient checkpointing work on a features model as on the classifier.
    """

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {f"model.{name}" for name in self.model.no_weight_decay()}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        def under_model(pattern: Any) -> Any:
            if isinstance(pattern, str):
                return r"^model\." + pattern.removeprefix("^")
            if isinstance(pattern, tuple) and pattern and isinstance(pattern[0], str):
                return (under_model(pattern[0]), *pattern[1:])
            return [under_model(p) for p in pattern]

        return {k: under_model(v) for k, v in self.model.group_matcher(coarse).items()}


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module,
                         source_spec: ArchSpec | None = None) -> dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: fit a checkpoint saved at another image size to ``model``.

    Every tensor whose shape follows the token grid (learned position tables, relative and LeViT
    bias tables over a whole feature map, ...) differs in shape between the two sizes. For each
    such key the nearest enclosing module that defines ``resize_state(name, tensor, source)``
    resamples it exactly as its forward pass resamples at another grid, so the model loaded at
    the new size gives the outputs the checkpoint's model gives on the same input; a module that
    cannot be resampled (linformer's token-count projections) raises a one-line ``ValueError``.
    ``source_spec`` is the genome the checkpoint was saved from (its img_size tells each module
    the grid its table was built for); without it square grids are inferred from the shapes.
    Other mismatches (a classifier of another size) are left to timm's loader.
    """
    own = model.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if not mismatched:
        return state_dict
    source = None
    if source_spec is not None:
        with torch.device("meta"):
            source = NasNet(source_spec)
    out = dict(state_dict)
    for key in mismatched:
        path = key.split(".")
        for cut in range(len(path) - 1, 0, -1):  # the nearest enclosing module that can resize
            owner_name = ".".join(path[:cut])
            owner = model.get_submodule(owner_name)
            resize = getattr(owner, "resize_state", None)
            if resize is not None:
                src = source.get_submodule(owner_name) if source is not None else None
                out[key] = resize(".".join(path[cut:]), state_dict[key], src)
                break
    return out


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def tied_groups(module: nn.Module) -> list[list[str]]:
    """State-dict names that reach one tensor, e.g. Linformer's ``proj_k``/``proj_v`` with
    ``share_kv``: each group has two or more names (in state-dict order) of the same storage view."""
    groups: dict[tuple, list[str]] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        if t.numel() == 0 or t.device.type == "meta":
            continue
        groups.setdefault((t.data_ptr(), t.dtype, tuple(t.shape), t.stride()), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def fill_tied_entries(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: a checkpoint saved de-duplicated (safetensors' ``save_model``)
    holds a tensor reachable under several names once; give the other names that entry, so strict
    loading (timm's local-dir, ``pretrained_cfg_overlay`` file, ``checkpoint_path``) works and the
    tie stays (every name still reaches one tensor)."""
    for names in tied_groups(module):
        have = next((prefix + n for n in names if prefix + n in state_dict), None)
        if have is not None:
            for n in names:
                state_dict.setdefault(prefix + n, state_dict[have])


def _as_spec(spec: ArchSpec | dict[str, Any] | str) -> ArchSpec:
    if isinstance(spec, ArchSpec):
        return spec
    if isinstance(spec, str):
        return ArchSpec.from_json(spec)
    if isinstance(spec, dict):
        return ArchSpec.from_dict(spec)
    raise ValueError(f"a genome must be an ArchSpec, a dict or a JSON string, got {type(spec).__name__}")


def _img_size_arg(img_size: Any) -> ImgSize:
    """``img_size`` as given to ``create_model``/``build_model`` (``N``, ``(H, W)`` or ``[H, W]``)
    in the genome's form; ``ValueError`` in one line for anything else."""
    try:
        img_hw(img_size)
    except ValueError:
        raise ValueError(f"img_size must be N (a square) or (H, W), got {img_size!r}") from None
    return img_size_value(tuple(img_size) if isinstance(img_size, list) else img_size)


def spec_at(spec: ArchSpec | dict[str, Any] | str, img_size: ImgSize | None = None) -> ArchSpec:
    """A genome (ArchSpec, its dict or JSON) at ``img_size`` (``N`` or ``(H, W)``; default: its
    own), validated."""
    spec = _as_spec(spec)
    if img_size is not None and _img_size_arg(img_size) != spec.img_size:
        spec = spec.replace(img_size=_img_size_arg(img_size))
    return spec.validate()


def pretrained_cfg_for(spec: ArchSpec) -> dict[str, Any]:
    """timm pretrained_cfg entries that follow from a genome."""
    return dict(
        input_size=(spec.in_chans, *spec.img_hw), num_classes=spec.num_classes,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic", crop_pct=0.9,
        first_conv=STEMS.get(spec.stem.kind).first_conv,
        classifier="head.fc.3" if spec.head.mlp_ratio else "head.fc",  # an MLP head's last Linear
    )


def names_weights(overlay: dict[str, Any] | None) -> bool:
    """Whether a ``pretrained_cfg_overlay`` names a weights source of its own (timm's ``file``,
    ``url``, ``state_dict`` or ``hf_hub_id``), as in
    ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file="w.safetensors"))``."""
    return any((overlay or {}).get(k) for k in _WEIGHT_SOURCE_KEYS)


def create_nasnet(variant: str, spec: ArchSpec | dict | str, pretrained: bool = False, **kwargs: Any) -> NasNet:
    """Build through timm's ``build_model_with_cfg`` (features_only, pretrained_cfg, ...).

    ``num_classes``, ``in_chans`` and ``img_size`` change the genome itself, so the model's
    ``pretrained_cfg`` always describes the model that was built.
    """
    spec = _as_spec(spec)
    changes = {k: kwargs.pop(k) for k in ("num_classes", "in_chans", "img_size") if kwargs.get(k) is not None}
    if "img_size" in changes:
        changes["img_size"] = _img_size_arg(changes["img_size"])
    spec = spec.replace(**changes) if changes else spec
    overlay = pretrained_cfg_for(spec)
    source = kwargs.get("pretrained_cfg")
    given = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    source_spec = None
    if isinstance(source, dict):  # weights described by a config (local-dir:, hf-hub:, an export)
        if source.get("input_size"):  # the genome the checkpoint was saved from: grid tables resample
            c, *hw = source["input_size"]
            source_spec = spec.replace(img_size=img_size_value(tuple(hw)), in_chans=int(c),
                                       num_classes=int(source.get("num_classes", spec.num_classes)))
        # keep the checkpoint's classes and channels so timm drops a classifier of another size
        overlay["num_classes"] = source.get("num_classes", overlay["num_classes"])
        overlay["input_size"] = (*(source.get("input_size") or overlay["input_size"])[:1], *overlay["input_size"][1:])
        folder = source.get("file") if source.get("source") == "local-dir" else None
        if folder and names_weights(given):
            given.setdefault("source", "")  # weights named by the caller win over the folder's
        elif pretrained and folder and not any(any(Path(folder).glob(f"*{ext}")) for ext in _CHECKPOINT_EXTS):
            raise ValueError(f"{folder} holds no weights (exported without --weights): create the model with "
                             "pretrained=False, put a checkpoint (model.safetensors) in the folder, pass "
                             "pretrained_cfg_overlay=dict(file=...) or checkpoint_path=..., or export again with "
                             "weights")
    overlay.update(given)
    for k in ("num_classes", "in_chans"):
        kwargs.pop(k, None)
    kwargs.setdefault("pretrained_filter_fn", functools.partial(checkpoint_filter_fn, source_spec=source_spec))
    return build_model_with_cfg(
        NasNet, variant, pretrained, spec=spec, pretrained_cfg_overlay=overlay,
        num_classes=spec.num_classes, in_chans=spec.in_chans,
        feature_cfg=dict(feature_cls=NasFeatureNet, out_indices=tuple(range(len(spec.stages)))), **kwargs,
    )


def build_model(spec: ArchSpec | dict | str, **kwargs: Any) -> NasNet:
    """``ArchSpec`` -> ``NasNet``. kwargs: num_classes, img_size, in_chans, drop_path_rate,
    drop_rate, features_only, out_indices, ... (anything timm's builder takes)."""
    return create_nasnet("attnnas", spec, pretrained=False, **kwargs)


def _default_cfg(**kw: Any) -> dict[str, Any]:
    cfg = dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=None, mean=IMAGENET_MEAN,
               std=IMAGENET_STD, interpolation="bicubic", crop_pct=0.9, first_conv="stem.proj",
               classifier="head.fc", license="apache-2.0")
    cfg.update(kw)
    return cfg


def _preset_variants() -> dict[str, ArchSpec]:
    from search_space.presets import PRESETS

    return {f"attnnas_{name}": spec for name, spec in PRESETS.items()}


# timm reads a module's ``default_cfgs`` when ``register_model`` runs, so they come first.
default_cfgs = generate_default_cfgs(
    {"attnnas": _default_cfg(), **{v: _default_cfg(**pretrained_cfg_for(s)) for v, s in _preset_variants().items()}}
)


def _register_presets() -> None:
    """Register ``attnnas_<preset>`` for every preset."""
    for variant, spec in _preset_variants().items():

        def make(pretrained: bool = False, _spec: ArchSpec = spec, _variant: str = variant, **kwargs: Any) -> NasNet:
            return create_nasnet(_variant, _spec, pretrained=pretrained, **kwargs)

        make.__name__ = make.__qualname__ = variant
        make.__doc__ = f"The {variant[len('attnnas_'):]} preset as a timm model."
        register_model(make)


@register_model
def attnnas(pretrained: bool = False, genome: ArchSpec | dict | str | None = None, **kwargs: Any) -> NasNet:
    """A model from any genome: ``timm.create_model("attnnas", genome=spec.to_dict())``."""
    if genome is None:
        raise ValueError("attnnas needs genome=<ArchSpec, its dict or JSON>; or use a preset, e.g. attnnas_deit_tiny")
    return create_nasnet("attnnas", genome, pretrained=pretrained, **kwargs)


_register_presets()
