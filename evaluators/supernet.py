"""A weight-sharing supernet: trained once per study, then any genome of the space is scored in
seconds with inherited weights.

Papers: Guo et al. 2020, "Single Path One-Shot Neural Architecture Search with Uniform Sampling"
(SPOS: one sampled path per step, separate weights per candidate operator, BatchNorm statistics
recalibrated per path before scoring); Chen et al. 2021, "AutoFormer: Searching Transformers for
Visual Recognition" (weight entanglement: a smaller width, head count or MLP ratio uses the leading
slices of the largest block's weights; elastic depth); Wang et al. 2022, "NASViT" (the sandwich
rule against gradient conflicts between large and small subnets).

How it works (``WeightBank``):

- The space's largest skeleton is one *slot* per stage position (a pyramid's stage ``i`` and an
  isotropic model's single stage share slot 0), each with its largest width and depth.
- Every tensor a genome's ``NasNet`` can hold is mapped to a *bank key*: its place (stem kind and
  patch, slot, block, mixer kind, MLP kind, downsampler, position encoding, head pool) plus the
  discrete settings its *shape* depends on. The bank is built by instantiating each operator at
  the slot's largest width for every setting of the space and comparing tensor shapes: a
  setting that changes a tensor's shape (a convolution's ``kernel_size``, a spatial-reduction's
  ``sr_ratio``, a window-size-sized bias table, a grid-sized position table) gets separate
  weights per value; one that does not (e.g. ``window_size`` for the qkv projection) shares
  them. Different mixer kinds never share weights (attention, convolution and pooling have
  nothing meaningful to share); within a kind, width, head count and MLP ratio are entangled:
  the path's tensor is the leading slice of the bank's, per chunk where the bank's axis is
  ``c x`` the width (a fused ``qkv`` projection is three chunks: q, k and v each take their own
  leading rows).
- Elastic depth: a stage of depth ``d`` uses its slot's first ``d`` blocks.
- A path is run by ``torch.func.functional_call`` on the genome's own ``NasNet`` with the bank's
  slices as its parameters, so gradients reach the shared weights and the extracted subnet (the
  slices copied into a ``NasNet``) computes exactly what the path computes.
- Normalisation: blocks, heads and most stems use LayerNorm (no statistics). Paths with
  BatchNorm (the ``conv`` stem, CvT's projection, EfficientViT's attention) keep their own
  running statistics, recalibrated on training images before a path is scored (SPOS).
- Buffers (position indices, Performer's random features, sin-cos tables) are the path's own,
  built deterministically from the genome.

A genome that cannot map (a stage beyond the slots, a knob value or operator the space does not
list) is refused with one ``ValueError`` line naming what is missing.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.config import ProxyConfig
from evaluators.data import LoadedData
from search_space.genome import ArchSpec, Knobs

STRATEGIES = ("uniform", "sandwich")
CHECKPOINT_VERSION = 1


# --- the space the supernet covers -------------------------------------------------------------
@dataclass(frozen=True)
class SlotSpec:
    """One stage position: the largest width and depth any genome gives it and the grid sides
    (feature-map side at the study's image size) it can see."""

    max_dim: int
    max_depth: int
    grids: tuple[int, ...]


@dataclass(frozen=True)
class MixerConfig:
    """One mixer setting the space can produce at ``slot`` on a ``grid x grid`` map: ``knobs``
    are the (clamped) knob values, ``num_heads`` included."""

    slot: int
    grid: int
    mixer: str
    knobs: Knobs = ()


@dataclass(frozen=True)
class SupernetSpace:
    """Everything the supernet must cover, in concrete values (the study's ``[space]`` expanded;
    ``nas.supernet.supernet_space`` builds it from a study)."""

    img_size: int
    in_chans: int
    num_classes: int
    stems: tuple[tuple[str, int, Knobs], ...]
    slots: tuple[SlotSpec, ...]
    mixers: tuple[MixerConfig, ...]
    pos: tuple[str, ...] = ("none",)
    mlp: tuple[str, ...] = ("mlp",)
    max_mlp_ratio: float = 4.0
    downsample: tuple[str, ...] = ("conv",)
    head_pool: tuple[str, ...] = ("avg",)
    layer_scale: bool = False

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha1(repr(self).encode()).hexdigest()[:16]


def _knob_str(knobs: Iterable[tuple[str, Any]]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(knobs)) or "-"


def _bank_name(key: str) -> str:
    return key.replace(".", "/")  # module attribute names may not hold dots


def _no_decay_names(module: nn.Module) -> set[str]:
    """Names listed by modules' ``no_weight_decay_params`` (as ``NasNet.no_weight_decay`` reads them)."""
    out = set()
    for mod_name, mod in module.named_modules():
        for p in getattr(mod, "no_weight_decay_params", ()):
            out.add(f"{mod_name}.{p}" if mod_name else p)
    return out


def _seeded_build(fn: Callable[[], nn.Module]) -> nn.Module:
    """``fn()`` under a fixed seed, with ``NasNet``'s weight init (truncated-normal Linear layers)
    applied as the builder applies it: deterministic buffers and the initial values a
    stand-alone model of this operator would start from."""
    from search_space.builder import _init_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = fn()
        m.apply(_init_weights)
        return m


@dataclass
class _Plan:
    """How one genome's tensors come from the bank: name -> (bank key, shape, width pairs)."""

    spec: ArchSpec
    model: nn.Module
    params: dict[str, tuple[str, tuple[int, ...], tuple[tuple[int, int], ...]]]
    has_bn: bool
    n_params: int
    device: torch.device = torch.device("cpu")


class WeightBank(nn.Module):
    """The supernet's weights; see the module docstring. ``forward_path(spec, x)`` runs one path
    on ``(B, C, H, W)`` images and returns ``(B, num_classes)`` logits.

    Raises ``ValueError`` (one line) for a space some operator cannot be built for, and from
    ``plan``/``forward_path``/``extract`` for a genome that does not map to the supernet.
    """

    def __init__(self, space: SupernetSpace, cache_size: int = 512) -> None:
        super().__init__()
        self.space = space
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.nwd: set[str] = set()
        # mixer tensors: (slot, mixer, tensor name) -> the discrete settings its shape depends on
        self.mixer_factors: dict[tuple[int, str, str], tuple[str, ...]] = {}
        self.pos_factors: dict[tuple[int, str, str], tuple[str, ...]] = {}
        self._cache: OrderedDict[str, _Plan] = OrderedDict()
        self.cache_size = cache_size
        self._inits: dict[str, torch.Tensor] = {}
        self._build()
        self.weights = nn.ParameterDict()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for key, shape in sorted(self.shapes.items()):
                t = self._init_tensor(key, shape)
                init = self._inits.get(key)
                if init is not None:  # the operator's own init where the largest build had this shape
                    t[tuple(slice(0, n) for n in init.shape)] = init
                self.weights[_bank_name(key)] = nn.Parameter(t)
        self._inits = {}

    # --- construction ------------------------------------------------------------------------
    def _add(self, key: str, shape: tuple[int, ...], value: torch.Tensor | None = None) -> None:
        if value is not None and (key not in self._inits or value.numel() > self._inits[key].numel()):
            self._inits[key] = value.detach()  # the operator's own initial values (largest build)
        old = self.shapes.get(key)
        if old is not None and len(old) != len(shape):
            raise ValueError(f"supernet: tensor {key} has shapes {old} and {shape} of different rank")
        self.shapes[key] = tuple(max(a, b) for a, b in zip(old, shape, strict=True)) if old else tuple(shape)

    def _add_module(self, prefix: str, module: nn.Module) -> None:
        nwd = _no_decay_names(module)
        for name, p in module.named_parameters():
            self._add(f"{prefix}.{name}", tuple(p.shape), p)
            if name in nwd:
                self.nwd.add(f"{prefix}.{name}")

    def _build(self) -> None:
        from operators import CHANNEL_MLPS, DOWNSAMPLERS, MIXERS, POS_ENCODINGS, STEMS, UnifiedBlock
        from operators.heads import ClassifierHead

        sp = self.space
        for kind, patch, knobs in sp.stems:
            stem = _seeded_build(lambda kind=kind, patch=patch, knobs=knobs: STEMS.get(kind)(
                sp.in_chans, sp.slots[0].max_dim, patch_size=patch, **dict(knobs)))
            self._add_module(f"stem.{kind}.p{patch}.{_knob_str(knobs)}", stem)
        for i, slot in enumerate(sp.slots):
            if i:
                for ds in sp.downsample:
                    self._add_module(f"s{i}.down.{ds}", _seeded_build(
                        lambda ds=ds, i=i: DOWNSAMPLERS.get(ds)(sp.slots[i - 1].max_dim, sp.slots[i].max_dim)))
            # grid position encodings: per kind, per grid only where the shape depends on it
            for pos in sp.pos:
                cls = POS_ENCODINGS.get(pos)
                if cls.placement != "grid":
                    continue
                built = [({"grid": g}, dict(_seeded_build(lambda cls=cls, g=g, d=slot.max_dim: cls(
                    d, grid_size=(g, g))).named_parameters())) for g in slot.grids]
                entries = [(f, {n: tuple(p.shape) for n, p in ps.items()}) for f, ps in built]
                for name, factors in _shape_factors(entries).items():
                    self.pos_factors[(i, pos, name)] = factors
                for fac, ps in built:
                    for name, p in ps.items():
                        self._add(self._pos_key(i, pos, name, fac), tuple(p.shape), p)
            # block parts other than the mixer, per MLP kind
            first_mixer = next((m.mixer for m in sp.mixers if m.slot == i), "pool")
            for mlp in sp.mlp:
                block = _seeded_build(lambda mlp=mlp, d=slot.max_dim, g=slot.grids[0], fm=first_mixer: UnifiedBlock(
                    d, token_mixer=MIXERS.get("pool", None) or MIXERS.get(fm), grid_size=(g, g),
                    mlp_layer=CHANNEL_MLPS.get(mlp), mlp_ratio=sp.max_mlp_ratio,
                    layer_scale=1e-5 if sp.layer_scale else None))
                for name, p in block.named_parameters():
                    child = name.split(".")[0]
                    if child == "mixer":
                        continue
                    for j in range(slot.max_depth):
                        key = (f"s{i}.b{j}.mlp.{mlp}.{name[4:]}" if child == "mlp" else f"s{i}.b{j}.{name}")
                        self._add(key, tuple(p.shape), p)
            # mixers: every setting of the space, at the slot's largest width
            by_mixer: dict[str, list[tuple[dict[str, Any], dict[str, tuple[int, ...]], int, set[str]]]] = {}
            for mc in sp.mixers:
                if mc.slot != i:
                    continue
                cls = MIXERS.get(mc.mixer)
                knobs = dict(mc.knobs)
                heads = knobs.pop("num_heads", None)
                kw = dict(knobs, **({"num_heads": heads} if heads is not None else {}))
                why = cls.check(slot.max_dim, (mc.grid, mc.grid), kw)
                if why:
                    raise ValueError(f"supernet: mixer {mc.mixer!r} {kw} cannot be built at the slot {i} width "
                                     f"{slot.max_dim}: {why}")
                for pos in self._attn_pos_options(cls):
                    if pos != "none" and POS_ENCODINGS.get(pos).check(slot.max_dim, heads or 1) is not None:
                        continue
                    m = _seeded_build(lambda cls=cls, kw=kw, pos=pos, g=mc.grid, d=slot.max_dim: cls(
                        d, grid_size=(g, g), pos_encoding=pos, block_index=0, **kw))
                    fac = {"pos": pos, "grid": mc.grid, **knobs}
                    by_mixer.setdefault(mc.mixer, []).append(
                        (fac, dict(m.named_parameters()), heads or 0, _no_decay_names(m)))
            for mixer, entries in by_mixer.items():
                factors = _shape_factors([(e[0], {n: tuple(p.shape) for n, p in e[1].items()}) for e in entries],
                                         context=[e[2] for e in entries])
                for name, fs in factors.items():
                    if name.startswith("pos.") or ".pos." in name:
                        fs = tuple(sorted(set(fs) | {"pos"}))  # different encodings never share
                    self.mixer_factors[(i, mixer, name)] = fs
                for fac, params, _, nwd in entries:
                    for name, p in params.items():
                        for j in range(slot.max_depth):
                            key = self._mixer_key(i, j, mixer, name, fac)
                            self._add(key, tuple(p.shape), p)
                            if name in nwd:
                                self.nwd.add(key)
        for k, slot in enumerate(sp.slots):
            self._add(f"norm.last{k}.weight", (slot.max_dim,))
            self._add(f"norm.last{k}.bias", (slot.max_dim,))
            heads = max([dict(m.knobs).get("num_heads", 1) for m in sp.mixers if m.slot <= k] or [1])
            for pool in sp.head_pool:
                head = _seeded_build(lambda pool=pool, d=slot.max_dim, h=heads: ClassifierHead(
                    d, sp.num_classes, pool=pool, num_heads=h))
                self._add_module(f"head.last{k}.{pool}", head)

    def _attn_pos_options(self, cls: type) -> list[str]:
        """``"none"`` and the space's attention-internal encodings this mixer supports."""
        from operators import POS_ENCODINGS

        return ["none", *[p for p in self.space.pos if POS_ENCODINGS.get(p).placement == "attention"
                          and p in cls.supported_pos]]

    def _pos_key(self, i: int, pos: str, name: str, fac: dict[str, Any]) -> str:
        fs = self.pos_factors.get((i, pos, name), ())
        return f"s{i}.pos.{pos}.{_knob_str((f, fac[f]) for f in fs)}.{name}"

    def _mixer_key(self, i: int, j: int, mixer: str, name: str, fac: dict[str, Any]) -> str:
        fs = self.mixer_factors.get((i, mixer, name))
        if fs is None:
            raise ValueError(f"supernet: slot {i} mixer {mixer!r} has no tensor {name!r} in the space's settings")
        return f"s{i}.b{j}.mixer.{mixer}.{_knob_str((f, fac[f]) for f in fs)}.{name}"

    def _init_tensor(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        """timm-style init: LayerNorm/BatchNorm weights 1, biases 0, the rest truncated normal
        (std 0.02) or Kaiming-uniform for convolutions."""
        leaf = key.rsplit(".", 1)[-1]
        t = torch.empty(shape)
        if len(shape) == 1 and leaf in ("bias", "weight", "gamma"):
            return t.fill_({"bias": 0.0, "weight": 1.0, "gamma": 1e-5}[leaf])
        if len(shape) == 4 and leaf == "weight":  # convolutions, as torch initialises them
            return nn.init.kaiming_uniform_(t, a=math.sqrt(5))
        return nn.init.trunc_normal_(t, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Bank parameter names (``weights.<key>``) that take no weight decay (position tables,
        class tokens); 1-D tensors are excluded by ``evaluators.proxy.param_groups`` anyway."""
        return {f"weights.{_bank_name(k)}" for k in self.nwd}

    # --- genome -> path ----------------------------------------------------------------------
    def plan(self, spec: ArchSpec) -> _Plan:
        """The genome's ``NasNet`` (its buffers and BatchNorm statistics are the path's own) and
        where each of its parameters comes from. Cached per ``arch_id`` (LRU)."""
        aid = spec.arch_id
        hit = self._cache.get(aid)
        if hit is not None:
            self._cache.move_to_end(aid)
            return hit
        from operators import MIXERS, POS_ENCODINGS
        from search_space.builder import NasNet

        sp = self.space
        if not isinstance(spec.img_size, int):
            raise ValueError(f"the supernet covers square images; this genome is {spec.img_size[0]}x{spec.img_size[1]}")
        if spec.img_size != sp.img_size or spec.num_classes != sp.num_classes or spec.in_chans != sp.in_chans:
            raise ValueError(f"genome is for {spec.img_size}px/{spec.num_classes} classes/{spec.in_chans} channels; "
                             f"the supernet for {sp.img_size}px/{sp.num_classes}/{sp.in_chans}")
        if len(spec.stages) > len(sp.slots):
            raise ValueError(f"genome has {len(spec.stages)} stages; the supernet has {len(sp.slots)} slots")
        for i, s in enumerate(spec.stages):
            slot = sp.slots[i]
            if s.dim > slot.max_dim or s.depth > slot.max_depth:
                raise ValueError(f"genome stage {i} ({s.depth} x @{s.dim}) exceeds the supernet slot "
                                 f"({slot.max_depth} x @{slot.max_dim})")
            if s.mlp_ratio > sp.max_mlp_ratio:
                raise ValueError(f"genome stage {i} mlp_ratio {s.mlp_ratio} exceeds the supernet's {sp.max_mlp_ratio}")
        model = _seeded_build(lambda: NasNet(spec))
        for p in model.parameters():
            p.requires_grad_(False)
        grids = [g[0] for g in spec.stage_grids()]
        last = len(spec.stages) - 1
        out: dict[str, tuple[str, tuple[int, ...], tuple[tuple[int, int], ...]]] = {}
        for name, p in model.named_parameters():
            parts = name.split(".")
            pairs: tuple[tuple[int, int], ...] = ()
            if parts[0] == "stem":
                knobs = spec.stem.knobs
                key = f"stem.{spec.stem.kind}.p{spec.stem.patch_size}.{_knob_str(knobs)}.{'.'.join(parts[1:])}"
                pairs = ((sp.slots[0].max_dim, spec.stages[0].dim),)
            elif parts[0] == "norm":
                key = f"norm.last{last}.{parts[1]}"
            elif parts[0] == "head":
                key = f"head.last{last}.{spec.head.pool}.{'.'.join(parts[1:])}"
                pairs = ((sp.slots[last].max_dim, spec.stages[last].dim),)
            else:  # stages.i.<part>...
                i, s = int(parts[1]), spec.stages[int(parts[1])]
                pairs = ((sp.slots[i].max_dim, s.dim),)
                if i and parts[2] == "downsample":  # e.g. patch merging's 4 x C_in concatenation
                    pairs += ((sp.slots[i - 1].max_dim, spec.stages[i - 1].dim),)
                rest = ".".join(parts[3:])
                if parts[2] == "downsample":
                    key = f"s{i}.down.{s.downsample}.{rest}"
                elif parts[2] == "pos":
                    key = self._pos_key(i, s.pos, rest, {"grid": grids[i]})
                else:  # blocks.j.child...
                    j, child, tail = int(parts[3]), parts[4], ".".join(parts[5:])
                    if child == "mixer":
                        attn_pos = s.pos if POS_ENCODINGS.get(s.pos).placement == "attention" else "none"
                        knobs = {k: v for k, v in s.mixer_knobs if k != "num_heads"}
                        if s.mixer not in {m.mixer for m in sp.mixers if m.slot == i}:
                            raise ValueError(f"genome stage {i} mixer {s.mixer!r} is not among the supernet's "
                                             f"slot-{i} mixers")
                        if attn_pos not in self._attn_pos_options(MIXERS.get(s.mixer)):
                            raise ValueError(f"genome stage {i}: {s.mixer!r} does not support pos {attn_pos!r}")
                        fac = {"pos": attn_pos, "grid": grids[i], **knobs}
                        fs = self.mixer_factors.get((i, s.mixer, tail))
                        if fs is not None and any(f not in fac for f in fs):
                            raise ValueError(f"genome stage {i} {s.mixer!r} lacks knob(s) "
                                             f"{[f for f in fs if f not in fac]} the supernet keys on")
                        key = self._mixer_key(i, j, s.mixer, tail, fac)
                    elif child == "mlp":
                        key = f"s{i}.b{j}.mlp.{s.mlp}.{tail}"
                        pairs = ()  # hidden = ratio x width: leading rows for every ratio, never chunks
                    else:
                        key = f"s{i}.b{j}.{child}.{tail}"
            big = self.shapes.get(key)
            if big is None:
                raise ValueError(f"genome does not map to the supernet: no weights for {name} (bank key {key}); "
                                 "the study's space does not list this setting")
            if len(big) != p.ndim or any(s > b for s, b in zip(p.shape, big, strict=True)):
                raise ValueError(f"genome does not map to the supernet: {name} {tuple(p.shape)} is larger than the "
                                 f"supernet's {big} ({key})")
            out[name] = (key, tuple(p.shape), pairs)
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        plan = _Plan(spec, model, out, has_bn, sum(math.prod(s) for _, s, _ in out.values()))
        self._cache[aid] = plan
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return plan

    def path_params(self, plan: _Plan) -> dict[str, torch.Tensor]:
        """The path's parameters as differentiable slices of the bank."""
        return {name: _slice(self.weights[_bank_name(key)], shape, pairs)
                for name, (key, shape, pairs) in plan.params.items()}

    def forward_path(self, spec: ArchSpec, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of ``spec``'s path on images ``(B, C, H, W)``."""
        plan = self.plan(spec)
        model = plan.model
        if plan.device != x.device:
            model.to(x.device)
            plan.device = x.device
        model.train(self.training)
        state = {**dict(model.named_buffers()), **self.path_params(plan)}
        return torch.func.functional_call(model, state, (x,), strict=False)

    def extract(self, spec: ArchSpec) -> nn.Module:
        """A stand-alone ``NasNet`` for ``spec`` holding the inherited weights (copies) and the
        path's buffers; it computes what ``forward_path`` computes."""
        from search_space.builder import NasNet

        plan = self.plan(spec)
        model = _seeded_build(lambda: NasNet(spec))
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.path_params(plan).items()}
            state.update({k: v.detach().clone() for k, v in plan.model.named_buffers()})
        missing = set(model.state_dict()) - set(state)
        if missing:
            raise ValueError(f"supernet: extracting {spec.summary()} left {sorted(missing)[:3]} unset")
        model.load_state_dict(state, strict=False)
        return model


def _slice(big: torch.Tensor, shape: tuple[int, ...], pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """The leading ``shape`` slice of ``big``; an axis that is ``c x`` a width in ``pairs`` (bank
    width, path width) is cut per chunk (q, k, v of a fused projection each keep their rows)."""
    out = big
    for axis, (b, s) in enumerate(zip(big.shape, shape, strict=True)):
        if b == s:
            continue
        chunk = next(((c, bw, pw) for bw, pw in pairs for c in (2, 3, 4)
                      if bw != pw and b == c * bw and s == c * pw), None)
        if chunk is None:
            out = out.narrow(axis, 0, s)
        else:
            c, bw, pw = chunk
            out = torch.cat([out.narrow(axis, k * bw, pw) for k in range(c)], dim=axis)
    return out


def _shape_factors(entries: list[tuple[dict[str, Any], dict[str, tuple[int, ...]]]],
                   context: list[Any] | None = None) -> dict[str, tuple[str, ...]]:
    """For each tensor name, the factors its shape (or presence) depends on: ``f`` matters when two
    entries that agree on every other factor (and on ``context``) differ in ``f`` and in the
    tensor's shape or presence."""
    context = context or [None] * len(entries)
    names = sorted({n for _, s in entries for n in s})
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        fs = set()
        for (fa, sa), ca in zip(entries, context, strict=True):
            for (fb, sb), cb in zip(entries, context, strict=True):
                if ca != cb or sa.get(name) == sb.get(name):
                    continue
                diff = [k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)]
                if len(diff) == 1:
                    fs.add(diff[0])
        out[name] = tuple(sorted(fs))
    return out


# --- training ----------------------------------------------------------------------------------
@dataclass
class SupernetResult:
    """What supernet training did: ``steps`` reached of ``total_steps``; ``resumed_from`` the step
    read from the checkpoint (0: a fresh start); seconds in training (this process and, summed,
    over every resumed run); ``paths`` the paths trained."""

    steps: int
    total_steps: int
    resumed_from: int
    train_time_s: float
    total_train_time_s: float
    paths: int
    strategy: str
    final_loss: float | None
    device: str
    checkpoint: str | None = None
    loss_per_epoch: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class SupernetTrainer:
    """Trains a ``WeightBank`` with the proxy recipe (``ProxyConfig``: AdamW groups, warm-up +
    cosine schedule, label smoothing, gradient clipping, the device-resident augmented batches
    of ``evaluators.proxy``), ``paths_per_step`` sampled paths per step, gradients accumulated.

    ``sampler(rng)`` returns a genome of the space from a ``random.Random``. Strategy
    ``"uniform"``: every path drawn uniformly (SPOS). ``"sandwich"``: of ``sandwich_pool`` draws,
    the largest and the smallest (parameter count) are trained, plus ``paths_per_step - 2``
    uniform ones (NASViT's sandwich rule, with the extremes of a pool standing in for the
    space's max/min network, which a heterogeneous space does not have).

    ``checkpoint``: written atomically every ``checkpoint_every`` steps and at the end; when it
    exists (same space, recipe and steps) training resumes from it. On CPU a resumed run ends with
    the same weights as an uninterrupted one (every random state is saved).
    """

    def __init__(self, config: ProxyConfig, steps: int, paths_per_step: int = 1, strategy: str = "uniform",
                 sandwich_pool: int = 4, checkpoint: str | Path | None = None, checkpoint_every: int = 50,
                 progress: bool = True, seed: int = 0) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"supernet strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if strategy == "sandwich" and paths_per_step < 2:
            raise ValueError("the sandwich strategy trains at least 2 paths per step (largest and smallest)")
        if steps < 1 or paths_per_step < 1:
            raise ValueError(f"supernet steps and paths_per_step must be positive, got {steps}, {paths_per_step}")
        self.config, self.steps, self.paths_per_step, self.strategy = config, steps, paths_per_step, strategy
        self.sandwich_pool, self.checkpoint_every, self.progress, self.seed = sandwich_pool, checkpoint_every, progress, seed
        self.checkpoint = Path(checkpoint) if checkpoint else None

    def _paths(self, bank: WeightBank, sampler: Callable[[random.Random], ArchSpec],
               rng: random.Random) -> list[ArchSpec]:
        if self.strategy == "uniform":
            return [sampler(rng) for _ in range(self.paths_per_step)]
        pool = sorted((sampler(rng) for _ in range(self.sandwich_pool)), key=lambda g: bank.plan(g).n_params)
        return [pool[-1], pool[0]] + [sampler(rng) for _ in range(self.paths_per_step - 2)]

    def _meta(self, bank: WeightBank) -> dict[str, Any]:
        return {"space": bank.space.fingerprint(), "steps": self.steps, "paths_per_step": self.paths_per_step,
                "strategy": self.strategy, "config": repr(self.config), "seed": self.seed}

    def fit(self, bank: WeightBank, data: LoadedData, sampler: Callable[[random.Random], ArchSpec],
            stop_after: int | None = None, on_step: Callable[[int, float], None] | None = None) -> SupernetResult:
        """Train (or resume) to ``self.steps`` steps; ``stop_after`` ends early at that step (with
        a checkpoint), as a crash would; ``on_step(step, loss)`` runs after every step."""
        from evaluators.proxy import DeviceBatches, _adamw, _resolve_device, cosine_lr

        cfg = self.config
        device = _resolve_device(cfg.device)
        bank.to(device)
        n_train = len(data.train_y)
        bs = min(cfg.batch_size, n_train)
        steps_per_epoch = max(1, n_train // bs)
        pad = data.crop_pad if cfg.crop_pad is None else cfg.crop_pad
        flip = data.flip_ok if cfg.flip is None else cfg.flip
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        train = DeviceBatches(data.train_x, data.train_y, data.mean, data.std, device, pad, flip)
        opt = _adamw(bank, cfg, device)
        warmup = round(cfg.warmup_frac * self.steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, self.steps, warmup, cfg.min_lr_ratio))
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        rng = random.Random(self.seed)
        step, perm, prior_time, losses = 0, None, 0.0, []
        meta = self._meta(bank)
        if self.checkpoint is not None and self.checkpoint.exists():
            ck = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
            if ck.get("meta") != meta:
                raise ValueError(f"supernet checkpoint {self.checkpoint} is from another space or recipe; "
                                 "delete it to train afresh")
            bank.load_state_dict(ck["bank"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            gen.set_state(ck["gen"])
            rng.setstate(ck["rng"])
            torch.set_rng_state(ck["torch_rng"])
            step, prior_time, losses = ck["step"], ck["time_s"], ck["losses"]
            perm = ck["perm"].to(device) if ck["perm"] is not None else None
        resumed_from = step
        t0 = time.perf_counter()
        end = self.steps if stop_after is None else min(self.steps, stop_after)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=step, desc="supernet", unit="step", leave=False)
        paths = 0
        last_loss = None
        bank.train()
        try:
            while step < end:
                pos = step % steps_per_epoch
                if pos == 0 or perm is None:
                    perm = torch.randperm(n_train, device=device, generator=gen)
                idx = perm[pos * bs:(pos + 1) * bs]
                xb, yb = train.augmented(idx, gen)  # (B, C, H, W)
                opt.zero_grad(set_to_none=True)
                total = 0.0
                specs = self._paths(bank, sampler, rng)
                for spec in specs:
                    with autocast:
                        logits = bank.forward_path(spec, xb)
                        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
                    (loss / len(specs)).backward()
                    total += float(loss.detach()) / len(specs)
                paths += len(specs)
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_([p for p in bank.parameters() if p.grad is not None], cfg.grad_clip)
                opt.step()
                sched.step()
                step += 1
                last_loss = total
                losses.append(total)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total:.3f}")
                if on_step is not None:
                    on_step(step, total)
                if self.checkpoint is not None and (step % self.checkpoint_every == 0 or step == end):
                    self._save(bank, opt, sched, gen, rng, step, perm, prior_time + time.perf_counter() - t0,
                               losses, meta)
        finally:
            if bar is not None:
                bar.close()
        spent = time.perf_counter() - t0
        per_epoch = [sum(losses[k:k + steps_per_epoch]) / len(losses[k:k + steps_per_epoch])
                     for k in range(0, len(losses), steps_per_epoch)]
        return SupernetResult(step, self.steps, resumed_from, spent, prior_time + spent, paths, self.strategy,
                              last_loss, str(device), str(self.checkpoint) if self.checkpoint else None, per_epoch)

    def _save(self, bank, opt, sched, gen, rng, step, perm, time_s, losses, meta) -> None:
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save({"version": CHECKPOINT_VERSION, "meta": meta, "bank": bank.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "gen": gen.get_state(), "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state(), "step": step, "perm": perm, "time_s": time_s,
                    "losses": losses}, tmp)
        os.replace(tmp, self.checkpoint)


def load_bank(bank: WeightBank, checkpoint: str | Path) -> WeightBank:
    """Load trained supernet weights from a ``SupernetTrainer`` checkpoint into ``bank``."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if ck.get("meta", {}).get("space") != bank.space.fingerprint():
        raise ValueError(f"supernet checkpoint {checkpoint} is from another search space")
    bank.load_state_dict(ck["bank"])
    return bank


# --- scoring -----------------------------------------------------------------------------------
@dataclass
class SupernetScore:
    """Validation top-1 (in [0, 1]) and loss of a path with inherited weights; ``seconds`` is the
    whole scoring (extraction, BatchNorm recalibration, optional fine-tune, validation)."""

    accuracy: float
    loss: float
    seconds: float
    recalibrated: bool
    finetune_steps: int = 0
    non_finite: int = 0  # validation logits that were NaN/inf (the inherited weights do not work for this path)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: LoadedData, images: int = 256, batch: int = 128,
                   device: torch.device | str = "cpu") -> bool:
    """Re-estimate every BatchNorm's running statistics on ``images`` training images (the
    path's own statistics, SPOS). Returns whether the model has BatchNorm."""
    from evaluators.proxy import DeviceBatches

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was = model.training
    model.train()
    n = min(images, len(data.train_y))
    plain = DeviceBatches(data.train_x[:n], data.train_y[:n], data.mean, data.std, torch.device(device), 0, False)
    for start in range(0, n, batch):
        model(plain.plain(start, min(n, start + batch))[0])
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.train(was)
    return True


def score_path(bank: WeightBank, spec: ArchSpec, data: LoadedData, config: ProxyConfig,
               finetune_steps: int = 0, calibration_images: int = 256) -> tuple[SupernetScore, nn.Module]:
    """Score ``spec`` with inherited weights: extract the subnet, recalibrate BatchNorm (if any),
    optionally fine-tune ``finetune_steps`` steps with the proxy recipe, then validate on the
    whole validation split. Returns the score and the (fine-tuned) subnet."""
    from evaluators.proxy import DeviceBatches, ProxyTrainer, _resolve_device

    t0 = time.perf_counter()
    device = _resolve_device(config.device)
    model = bank.extract(spec).to(device)
    if finetune_steps:
        from dataclasses import replace

        ProxyTrainer(replace(config, steps=finetune_steps, count_flops=False, warmup_frac=0.0)).fit(model, data)
        model.to(device)
    recal = recalibrate_bn(model, data, calibration_images, device=device)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    val = DeviceBatches(data.val_x, data.val_y, data.mean, data.std, device, 0, False)
    acc, loss, bad = ProxyTrainer._evaluate(model, val, config.eval_batch_size,
                                            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16))
    return SupernetScore(acc, loss, time.perf_counter() - t0, recal, finetune_steps, bad), model


def enumerate_mixers(slot: int, grid: int, mixer: str, knob_values: dict[str, list[Any]],
                     clamp: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[MixerConfig]:
    """Every ``MixerConfig`` of ``mixer`` at (slot, grid) from the knobs' value lists, each clamped
    by ``clamp`` (the search space's own clamping), de-duplicated."""
    names = sorted(knob_values)
    out: dict[Knobs, MixerConfig] = {}
    for combo in itertools.product(*(knob_values[n] for n in names)):
        knobs = dict(zip(names, combo, strict=True))
        if clamp is not None:
            knobs = clamp(knobs)
        mc = MixerConfig(slot, grid, mixer, tuple(sorted(knobs.items())))
        out.setdefault(mc.knobs, mc)
    return list(out.values())
