"""The declarative search space: ``SearchSpace(study).suggest(trial) -> ArchSpec``.

Define-by-run: the trial picks a shape (isotropic or pyramid), a stem, stage counts, depths,
widths, mixers per stage and only then each chosen mixer's own knobs (a window size is asked
for only when the mixer has windows). Knobs that cannot work on a stage's grid are clamped to
the nearest feasible value (``num_heads`` to the largest divisor of the width, ``window_size``
and ``sr_ratio`` to the grid side), and attention-internal position encodings fall back to
``"none"`` for mixers that do not support them; the result always passes ``ArchSpec.validate``.

Parameter names are stable (``shape``, ``stem``, ``s1.mixer``, ``s1.window.window_size``, ...)
so samplers see the same distribution under the same name in every trial.
"""

from __future__ import annotations

import math
import random
from typing import Any

from nas.errors import InvalidCandidate, NasError
from nas.study import DataSpec, IntRange, KnobRange, StudySpec
from search_space.genome import ArchSpec, HeadSpec, StageSpec, StemSpec

DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "synthetic": 10}
DATASET_CHANS = {"digits": 3, "cifar10": 3, "cifar100": 3, "imagefolder": 3, "synthetic": 3}


def num_classes_for(data: DataSpec) -> int | None:
    """The class count the study file implies (None for an ImageFolder until it is read)."""
    return data.num_classes or DATASET_CLASSES.get(data.dataset)


class SearchSpace:
    """Suggest valid ``ArchSpec`` genomes for one study.

    Args:
        study: the study whose ``space``, ``data.img_size`` define the genomes.
        num_classes: classifier width (default: from the dataset).
        in_chans: input channels (default 3).
    """

    def __init__(self, study: StudySpec, num_classes: int | None = None, in_chans: int | None = None) -> None:
        self.study = study
        self.space = study.space
        self.img_size = study.data.img_size
        self.num_classes = num_classes or num_classes_for(study.data) or 10
        self.in_chans = in_chans or DATASET_CHANS.get(study.data.dataset, 3)
        self.check()

    # --- validation of the space as a whole ------------------------------------------------
    def check(self) -> None:
        """Raise ``NasError`` if some choice can never give a valid genome at this image size."""
        for stem in self.space.stems:
            bad = [p for p in stem.patch_sizes if self.img_size % p or self.img_size // p < 1]
            if bad:
                raise NasError(f"stem {stem.kind!r} patch_size {bad} does not divide img_size={self.img_size}; "
                               f"use divisors of {self.img_size}")
        if "pyramid" in self.space.shapes and self.space.stages.high < 2:
            raise NasError("a pyramid needs at least 2 stages: set space.stages high >= 2 or drop the pyramid shape")

    # --- the suggestion ----------------------------------------------------------------------
    def suggest(self, trial: Any) -> ArchSpec:
        """Ask ``trial`` (an Optuna trial or anything with ``suggest_*``) for one valid genome."""
        sp = self.space
        shape = trial.suggest_categorical("shape", list(sp.shapes))
        stem_kind = trial.suggest_categorical("stem", [s.kind for s in sp.stems])
        stem_space = next(s for s in sp.stems if s.kind == stem_kind)
        patch = trial.suggest_categorical(f"stem.{stem_kind}.patch_size", list(stem_space.patch_sizes))
        stem_knobs = {k.name: _suggest_knob(trial, f"stem.{stem_kind}.{k.name}", k) for k in stem_space.knobs}
        stem = StemSpec(stem_kind, patch, stem_knobs)
        grid0 = self.img_size // patch

        pos = trial.suggest_categorical("pos", list(sp.pos))
        mlp = trial.suggest_categorical("mlp", list(sp.mlp))
        mlp_ratio = trial.suggest_categorical("mlp_ratio", list(sp.mlp_ratio))
        layer_scale = trial.suggest_categorical("layer_scale", list(sp.layer_scale))

        if shape == "isotropic":
            depth = _suggest_range(trial, "iso.depth", sp.iso_depth)
            width = _suggest_range(trial, "iso.width", sp.width)
            mixer = trial.suggest_categorical("iso.mixer", sp.mixer_names)
            knobs = self._suggest_mixer_knobs(trial, "iso", mixer)
            stages = [self._stage(depth, width, mixer, knobs, pos, mlp, mlp_ratio, "none", layer_scale, (grid0, grid0))]
        else:
            max_stages = self._max_stages(patch)
            n = trial.suggest_int("n_stages", sp.stages.low, sp.stages.high)
            n = max(1, min(n, max_stages))
            width = _suggest_range(trial, "width", sp.width)
            growth = trial.suggest_categorical("width_growth", list(sp.width_growth))
            downsample = trial.suggest_categorical("downsample", list(sp.downsample))
            shared_mixer = None if sp.per_stage_mixer else trial.suggest_categorical("mixer", sp.mixer_names)
            stages, side = [], grid0
            step = sp.width.step if sp.width.step > 1 else 8
            for i in range(n):
                if i > 0:
                    side = -(-side // 2)
                dim = _round_to(width * growth ** i, step)
                if sp.max_width:
                    dim = min(dim, max(step, sp.max_width // step * step))
                depth = _suggest_range(trial, f"s{i}.depth", sp.depth)
                mixer = shared_mixer or trial.suggest_categorical(f"s{i}.mixer", sp.mixer_names)
                knobs = self._suggest_mixer_knobs(trial, f"s{i}" if sp.per_stage_mixer else "all", mixer)
                ds = "none" if i == 0 else downsample
                stages.append(self._stage(depth, dim, mixer, knobs, pos, mlp, mlp_ratio, ds, layer_scale, (side, side)))
        head = HeadSpec(trial.suggest_categorical("head_pool", list(sp.head_pool)))
        spec = ArchSpec(stem=stem, stages=tuple(stages), head=head, num_classes=self.num_classes,
                        in_chans=self.in_chans, img_size=self.img_size)
        try:
            return spec.validate()
        except ValueError as e:
            raise InvalidCandidate(f"invalid genome after clamping: {e}") from None

    def sample(self, seed: int | random.Random) -> ArchSpec:
        """A uniformly random genome (no Optuna needed): for benchmarks and screening."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        return self.suggest(RandomTrial(rng))

    # --- helpers ---------------------------------------------------------------------------
    def _max_stages(self, patch: int) -> int:
        """The most stride-2 stages the image allows after a stem of stride ``patch``."""
        n = 1
        while self.img_size % (patch * 2 ** n) == 0 and self.img_size // (patch * 2 ** n) >= 1 and n < 4:
            n += 1
        return n

    def _suggest_mixer_knobs(self, trial: Any, prefix: str, mixer: str) -> dict[str, Any]:
        ms = next(m for m in self.space.mixers if m.name == mixer)
        return {k.name: _suggest_knob(trial, f"{prefix}.{mixer}.{k.name}", k) for k in ms.knobs}

    def _stage(self, depth: int, dim: int, mixer: str, knobs: dict[str, Any], pos: str, mlp: str,
               mlp_ratio: float, downsample: str, layer_scale: float | None, grid: tuple[int, int]) -> StageSpec:
        from operators import MIXERS, POS_ENCODINGS

        cls = MIXERS.get(mixer)
        knobs = clamp_knobs(cls, dim, grid, knobs)
        pos_cls = POS_ENCODINGS.get(pos)
        if pos_cls.placement == "attention":
            heads = knobs.get("num_heads", 1)
            if pos not in cls.supported_pos or pos_cls.check(dim, heads) is not None:
                pos = "none"  # this stage cannot carry it (e.g. RoPE on a head width not divisible by 4)
        return StageSpec(depth=depth, dim=dim, mixer=mixer, mixer_knobs=knobs, pos=pos, mlp=mlp,
                         mlp_ratio=float(mlp_ratio), downsample=downsample, layer_scale=layer_scale)


def clamp_knobs(mixer_cls: Any, dim: int, grid: tuple[int, int], knobs: dict[str, Any]) -> dict[str, Any]:
    """Move knobs to the nearest values that work for ``dim`` channels on ``grid``."""
    knobs = dict(knobs)
    known = mixer_cls.knobs()
    side = min(grid)
    if "num_heads" in known:
        h = int(knobs.get("num_heads", known["num_heads"].default))
        h = max(1, min(h, dim))
        while dim % h:
            h -= 1
        knobs["num_heads"] = h
    for name in ("window_size", "sr_ratio"):
        if name in known:
            v = knobs.get(name, known[name].default)
            if v is not None and v > side:
                knobs[name] = side
    if "pool_size" in known and mixer_cls.registry_name == "sra_linear":
        v = knobs.get("pool_size", known["pool_size"].default)
        if v > side:
            knobs["pool_size"] = side
    if mixer_cls.check(dim, grid, knobs) is not None:  # a rule we do not know how to clamp
        defaults = {k: v for k, v in knobs.items() if k in ("num_heads",)}
        if mixer_cls.check(dim, grid, defaults) is None:
            return defaults
    return knobs


def _round_to(x: float, step: int) -> int:
    return max(step, int(round(x / step)) * step)


def _suggest_range(trial: Any, name: str, r: IntRange) -> int:
    if r.low == r.high:
        return trial.suggest_int(name, r.low, r.high)
    return trial.suggest_int(name, r.low, r.high, step=r.step)


def _suggest_knob(trial: Any, name: str, k: KnobRange) -> Any:
    if k.choices is not None:
        return trial.suggest_categorical(name, list(k.choices))
    if k.kind == "int":
        if k.log:
            return trial.suggest_int(name, int(k.low), int(k.high), log=True)
        return trial.suggest_int(name, int(k.low), int(k.high), step=int(k.step or 1))
    if k.log:
        return trial.suggest_float(name, float(k.low), float(k.high), log=True)
    return trial.suggest_float(name, float(k.low), float(k.high), step=k.step)


class RandomTrial:
    """The ``suggest_*`` surface of an Optuna trial, drawing uniformly from a ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        v = self.params[name] = self.rng.choice(list(choices))
        return v

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        if log:
            v = int(round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))
        else:
            v = self.rng.randrange(low, high + 1, step)
        self.params[name] = v
        return v

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        if log:
            v = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            v = self.rng.uniform(low, high)
            if step:
                v = low + round((v - low) / step) * step
        self.params[name] = v
        return v
