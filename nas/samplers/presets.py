"""Warm start: the study's presets as plans of its space, shrunk until they fit the caps.

A preset (``search_space.PRESETS``, at the study's resolution by
``nas.space.preset_for_study``) is projected onto the space's parameters: its shape,
stem, patch size, position encoding, channel MLP, widths, depths, mixers and their knobs, each
moved to the nearest value the space allows (a mixer the space lacks becomes the space's first
mixer). Then, while the genome is over the FLOP or parameter cap, the largest depth and the
width step down one notch at a time (``[presets] warm_start = true`` switches this on).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from nas.samplers.genome_ops import GenomeOps, Plan
from nas.space import InvalidCandidate
from nas.study import StudySpec
from search_space.genome import ArchSpec


def project(preset: ArchSpec, ops: GenomeOps) -> Plan:
    """The plan of ``ops``'s space closest to ``preset`` (see the module docstring)."""
    sp = ops.sp
    first = preset.stages[0]
    iso = len(preset.stages) == 1
    shape = "isotropic" if (iso and "isotropic" in sp.shapes) or "pyramid" not in sp.shapes else "pyramid"
    kind = preset.stem.kind if preset.stem.kind in ops.stem_kinds else ops.stem_kinds[0]
    p: Plan = {"shape": shape, "stem": kind, f"stem.{kind}.patch_size": preset.stem.patch_size,
               "pos": first.pos if first.pos in sp.pos else ("none" if "none" in sp.pos else sp.pos[0]),
               "mlp": first.mlp if first.mlp in sp.mlp else sp.mlp[0], "mlp_ratio": first.mlp_ratio,
               "layer_scale": first.layer_scale if first.layer_scale in sp.layer_scale else sp.layer_scale[0],
               "head_pool": preset.head.pool if preset.head.pool in sp.head_pool else sp.head_pool[0]}
    p.update({f"stem.{kind}.{k}": v for k, v in preset.stem.knobs})

    def mixer_genes(prefix: str, stage: object) -> None:
        m = stage.mixer if stage.mixer in sp.mixer_names else sp.mixer_names[0]
        p["mixer" if prefix == "all" else f"{prefix}.mixer"] = m
        searched = ops.mixer_knobs.get(m, set())
        p.update({f"{prefix}.{m}.{k}": v for k, v in stage.mixer_knobs if k in searched})

    if shape == "isotropic":
        p["iso.depth"] = sum(s.depth for s in preset.stages)
        p["iso.width"] = first.dim
        mixer_genes("iso", preset.stages[-1])
        return p
    stages = preset.stages
    p["n_stages"] = len(stages)
    p["width"] = first.dim
    if len(stages) > 1:
        p["width_growth"] = stages[1].dim / first.dim
        p["downsample"] = stages[1].downsample if stages[1].downsample in sp.downsample else sp.downsample[0]
    if not sp.per_stage_mixer:
        mixer_genes("all", stages[-1])
    for i, s in enumerate(stages):
        p[f"s{i}.depth"] = s.depth
        if sp.per_stage_mixer:
            mixer_genes(f"s{i}", s)
    return p


def shrink(plan: Plan, ops: GenomeOps, fits: Callable[[ArchSpec], bool], rng: random.Random,
           max_steps: int = 64) -> tuple[Plan, ArchSpec]:
    """Step the largest depth and the width down, alternately, until the genome fits (or
    nothing can shrink further); returns the replayed plan and its genome."""
    plan, spec = ops.replay(plan, rng)
    for step in range(max_steps):
        if fits(spec):
            break
        depth = [k for k in plan if k.endswith(".depth") and k in ops.dists]
        width = [k for k in ("width", "iso.width") if k in plan and k in ops.dists]
        deepest = [max(depth, key=lambda k: (plan[k], k))] if depth else []
        for keys in ((deepest, width) if step % 2 == 0 else (width, deepest)):
            if keys and ops.dists[keys[0]].step_from(plan[keys[0]], -1, rng) != plan[keys[0]]:
                plan[keys[0]] = ops.dists[keys[0]].step_from(plan[keys[0]], -1, rng)
                break
        else:
            break  # at the bottom of every range
        plan, spec = ops.replay(plan, rng)
    return plan, spec


def preset_plans(study: StudySpec, ops: GenomeOps, fits: Callable[[ArchSpec], bool],
                 seed: int) -> list[tuple[str, Plan, ArchSpec]]:
    """(name, plan, genome) of each of the study's presets, projected and shrunk."""
    from nas.space import preset_for_study
    from search_space import PRESETS

    out = []
    rng = random.Random(seed)
    for name in study.presets.names:
        try:
            preset = preset_for_study(name, study, ops.space.num_classes, ops.space.in_chans)
        except ValueError:
            preset = PRESETS[name]
        try:
            plan, spec = shrink(project(preset, ops), ops, fits, rng)
        except InvalidCandidate:
            continue
        out.append((name, plan, spec))
    return out
