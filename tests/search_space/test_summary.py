"""``ArchSpec.summary()`` tells any two different networks apart (issue 19.2): distinct
``arch_id`` (sha1 of the canonical form) <=> distinct summary."""

from __future__ import annotations

import dataclasses
import random

from evaluators.random_genomes import random_genome
from operators import CHANNEL_ATTNS, CHANNEL_MLPS, DOWNSAMPLERS, MIXERS, POS_ENCODINGS, STEMS
from search_space.genome import ArchSpec, HeadSpec, StageSpec, StemSpec, summary_of_json


def _assert_injective(specs: list[ArchSpec]) -> None:
    by_id: dict[str, str] = {}
    by_summary: dict[str, str] = {}
    for s in specs:
        text = s.summary()
        assert by_id.setdefault(s.arch_id, text) == text, f"one network, two summaries: {text!r}"
        other = by_summary.setdefault(text, s.arch_id)
        assert other == s.arch_id, f"two networks share the summary {text!r}"


def _other(v, knob_type):
    if knob_type is bool:
        return not v
    if knob_type is int:
        return v + 1
    if knob_type is float:
        return v + 0.5
    return "attention" if v != "attention" else "pool"


def _base() -> ArchSpec:
    return ArchSpec(StemSpec("patchify", 4), (StageSpec(2, 32, "sepconv"), StageSpec(2, 64, "window", downsample="conv")),
                    num_classes=10, img_size=32)


def _one_knob_variants() -> list[ArchSpec]:
    """The base genome and, for every field and every operator knob, a copy that differs in it."""
    base = _base()
    out = [base]
    rep = dataclasses.replace
    st = base.stages[1]
    # whole-genome, stem and head fields
    out += [base.replace(num_classes=100), base.replace(in_chans=1), base.replace(img_size=64),
            base.replace(img_size=(32, 48)), base.replace(stem=rep(base.stem, patch_size=2)),
            base.replace(head=HeadSpec("cls")), base.replace(head=HeadSpec(mlp_ratio=2.0)),
            base.replace(head=HeadSpec(drop_rate=0.1)), base.replace(head=HeadSpec(mlp_ratio=2.0, drop_rate=0.1))]
    for kind in STEMS.names():
        stem = StemSpec(kind, 4)
        out.append(base.replace(stem=stem))
        for name, knob in STEMS.get(kind).knobs().items():
            out.append(base.replace(stem=StemSpec(kind, 4, {name: _other(knob.default, knob.type)})))
    # every stage field
    changes = [{"depth": 3}, {"dim": 96}, {"mlp_ratio": 3.0}, {"mlp_ratio": 4.5}, {"layer_scale": 1e-5},
               {"layer_scale": 1e-6}, {"downsample": "none"}]
    changes += [{"pos": p} for p in POS_ENCODINGS.names() if p != st.pos]
    changes += [{"mlp": m} for m in CHANNEL_MLPS.names() if m != st.mlp]
    changes += [{"mlp": m, "mlp_ratio": 2.0} for m in CHANNEL_MLPS.names()]
    changes += [{"downsample": d} for d in DOWNSAMPLERS.names() if d != st.downsample]
    changes += [{"channel_attn": c} for c in CHANNEL_ATTNS.names()]
    for c in changes:
        out.append(base.replace(stages=(base.stages[0], rep(st, **c))))
    out.append(base.replace(stages=(rep(base.stages[0], downsample="conv"), st)))
    # every mixer, and every knob of each, one at a time (depth 2: no knob is canonicalised away)
    for mixer in MIXERS.names():
        out.append(base.replace(stages=(base.stages[0], rep(st, mixer=mixer, mixer_knobs=()))))
        for name, knob in MIXERS.get(mixer).knobs().items():
            knobs = {name: _other(knob.default, knob.type)}
            out.append(base.replace(stages=(base.stages[0], rep(st, mixer=mixer, mixer_knobs=knobs))))
            for name2, knob2 in MIXERS.get(mixer).knobs().items():  # and every pair of knobs
                if name2 > name:
                    both = {**knobs, name2: _other(knob2.default, knob2.type)}
                    out.append(base.replace(stages=(base.stages[0], rep(st, mixer=mixer, mixer_knobs=both))))
    # a third stage, and one stage fewer
    out.append(base.replace(stages=base.stages + (rep(st, dim=128),)))
    out.append(base.replace(stages=base.stages[:1]))
    return out


def test_summary_is_injective_on_one_knob_variants():
    specs = _one_knob_variants()
    assert len({s.arch_id for s in specs}) > 150
    _assert_injective(specs)


def test_summary_is_injective_on_random_genomes():
    rng = random.Random(19)
    specs = [random_genome(rng, img_size=32, num_classes=10, mixers=None, pos=None) for _ in range(400)]
    specs += [random_genome(rng, img_size=64, num_classes=100) for _ in range(200)]
    # the same networks written another way: fewer knobs given (defaults filled) share id and summary
    specs += [s.replace(stages=tuple(dataclasses.replace(st, mixer_knobs=()) for st in s.stages)) for s in specs[:100]]
    _assert_injective(specs)


def test_summary_shows_the_knobs_that_differ():
    base = _base()
    st = base.stages[1]
    a = base.replace(stages=(base.stages[0], dataclasses.replace(st, mixer_knobs={"num_heads": 2, "window_size": 4},
                                                                 pos="rel_bias")))
    b = base.replace(stages=(base.stages[0], dataclasses.replace(st, mixer_knobs={"num_heads": 1, "window_size": 4},
                                                                 pos="rel_bias", mlp_ratio=2.0)))
    assert a.summary() == "patchify4 | sepconv x2 @32 | window(h2,w4) x2 @64 [rel_bias, ds=conv] | avg | 32px 10cls"
    assert b.summary() == "patchify4 | sepconv x2 @32 | window(h1,w4) x2 @64 [rel_bias, mlp2, ds=conv] | avg | 32px 10cls"
    # written with the defaults spelled out: the same network, the same summary
    c = a.replace(stages=(a.stages[0], dataclasses.replace(a.stages[1], mixer_knobs={
        **a.stages[1].knob_dict, "shift": True, "qkv_bias": True})))
    assert c.arch_id == a.arch_id and c.summary() == a.summary()
    assert summary_of_json(a.to_json()) == a.summary()
