"""Random valid genomes at ImageNet scale, for the cost-model benchmarks and tests.

An independent sampler (the study's ``nas.space.SearchSpace`` is the search's own): 1 to 4
stages, a stem, widths, depths, and per stage a mixer from the registry with knobs that the
stage's grid allows. Every genome it returns passes ``ArchSpec.validate``.
"""

from __future__ import annotations

import random
from typing import Any

from search_space.genome import ArchSpec, HeadSpec, StageSpec, StemSpec

# The core mixers of the foundation; benchmarks default to these so figures stay comparable
# while the zoo grows. ``mixers=None`` in ``random_genome`` draws from the whole registry.
CORE_MIXERS = ("attention", "window", "sra", "sra_linear", "sepconv", "pool")
# Likewise the foundation's position encodings (grid ones and relative bias); None: the registry.
CORE_POS = ("none", "abs", "sincos", "cpe", "rel_bias")


def _knobs_for(cls: Any, dim: int, grid: tuple[int, int], rng: random.Random) -> dict[str, Any]:
    known = cls.knobs()
    knobs: dict[str, Any] = {}
    if "num_heads" in known:
        head_dim = rng.choice((32, 64))
        knobs["num_heads"] = max(1, dim // head_dim)
        while dim % knobs["num_heads"]:
            knobs["num_heads"] -= 1
    side = min(grid)
    if "window_size" in known and known["window_size"].default is not None:
        knobs["window_size"] = min(rng.choice((4, 7, 8)), side)
    if "sr_ratio" in known:
        knobs["sr_ratio"] = min(rng.choice((1, 2, 4, 8)), side)
    if "pool_size" in known and cls.registry_name == "sra_linear":
        knobs["pool_size"] = min(7, side)
    if cls.check(dim, grid, knobs) is not None:  # a rule this sampler does not know: defaults
        knobs = {k: v for k, v in knobs.items() if k == "num_heads"}
        if cls.check(dim, grid, knobs) is not None:
            raise ValueError("no knobs")
    return knobs


def random_genome(rng: random.Random | int, *, img_size: int = 224, num_classes: int = 1000,
                  mixers: tuple[str, ...] | None = CORE_MIXERS, pos: tuple[str, ...] | None = CORE_POS,
                  max_tries: int = 50) -> ArchSpec:
    """Draw one random valid genome.

    Args:
        rng: a ``random.Random`` or a seed.
        img_size: input side; must be divisible by 32.
        num_classes: classifier width.
        mixers: mixer names to draw from (None: every registered mixer).
        pos: position encodings to draw from (None: every registered one).
    """
    from operators import DOWNSAMPLERS, MIXERS, POS_ENCODINGS

    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    names = list(mixers) if mixers is not None else MIXERS.names()
    allowed_pos = set(pos) if pos is not None else set(POS_ENCODINGS.names())
    grid_pos = sorted(n for n, c in POS_ENCODINGS.items() if c.placement == "grid" and n in allowed_pos)
    downsamplers = [n for n in ("conv", "patch_merging", "pool") if n in DOWNSAMPLERS]
    last_error: Exception | None = None
    for _ in range(max_tries):
        n_stages = rng.randint(1, 4)
        if n_stages == 1:
            stem = StemSpec("patchify", 16)
            dims = [rng.choice((128, 192, 256, 320, 384))]
            depths = [rng.randint(2, 12)]
        else:
            stem = rng.choice((StemSpec("patchify", 4), StemSpec("overlap", 4, {"kernel_size": 7}),
                               StemSpec("conv", 4)))
            base = rng.choice((32, 48, 64, 96))
            dims = [base * 2 ** i for i in range(n_stages)]
            depths = [rng.randint(1, 4) for _ in range(n_stages)]
        side = img_size // stem.patch_size
        stages = []
        downsample = rng.choice(downsamplers)
        try:
            for i in range(n_stages):
                if i:
                    side = -(-side // 2)
                grid = (side, side)
                mixer = rng.choice(names)
                cls = MIXERS.get(mixer)
                attn_pos = sorted(cls.supported_pos & {n for n, c in POS_ENCODINGS.items()
                                                       if c.placement == "attention" and n in allowed_pos})
                stage_pos = rng.choice(grid_pos + attn_pos) if n_stages == 1 or rng.random() < 0.5 else "none"
                stages.append(StageSpec(
                    depth=depths[i], dim=dims[i], mixer=mixer, mixer_knobs=_knobs_for(cls, dims[i], grid, rng),
                    pos=stage_pos, mlp=rng.choice(("mlp", "mlp", "glu", "convffn")), mlp_ratio=rng.choice((2.0, 3.0, 4.0)),
                    downsample="none" if i == 0 else downsample, layer_scale=rng.choice((None, 1e-5)),
                ))
            spec = ArchSpec(stem=stem, stages=tuple(stages), head=HeadSpec(rng.choice(("avg", "avg", "cls"))),
                            num_classes=num_classes, img_size=img_size)
            return spec.validate()
        except ValueError as e:
            last_error = e
    raise ValueError(f"could not draw a valid genome in {max_tries} tries: {last_error}")
