"""The study side of the weight-sharing evaluator (``[evaluator] kind = "supernet"``).

``supernet_space(study)`` expands the study's ``[space]`` into the concrete settings
``evaluators.supernet.WeightBank`` covers (slots with their largest width/depth and grids, every
stem and every clamped mixer setting, exactly as ``nas.space.SearchSpace`` can produce them).
``study_supernet(study, data)`` trains the supernet once per study (or resumes it from its
checkpoint) and returns it; the checkpoint lives next to the study store as
``<store dir>/<study>_supernet/supernet.pt`` (``supernet_dir``), and the training cost is kept in
the checkpoint folder's ``cost.json`` for the study attribute ``supernet``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.space import InvalidCandidate, SearchSpace, _round_to, clamp_knobs
from nas.study import StudySpec
from search_space.genome import ArchSpec

SUPERNET_FILE = "supernet.pt"


def supernet_dir(study: StudySpec) -> Path:
    """``<store dir>/<name>_supernet`` for SQLite, ``./studies/<name>_supernet`` otherwise (the
    folder beside the study's weights folder)."""
    from nas.weights import weights_dir

    return weights_dir(study).parent / f"{study.name}_supernet"


def supernet_space(space: SearchSpace) -> Any:
    """The ``SupernetSpace`` a study's search space spans (raises ``NasError`` for a knob range
    that is not a finite set of values, which no weight bank can enumerate)."""
    from evaluators.supernet import MixerConfig, SlotSpec, SupernetSpace, enumerate_mixers
    from operators import MIXERS

    sp, img = space.space, space.img_size
    if not isinstance(img, int):
        raise NasError(f"the supernet evaluator covers square images; set data.img_size to one number, not {img}")
    patches = sorted({p for s in sp.stems for p in s.patch_sizes})
    step = sp.width.step if sp.width.step > 1 else 8
    slots: list[tuple[int, int, set[int]]] = []  # (max dim, max depth, grids)
    if "isotropic" in sp.shapes:
        slots.append((sp.width.high, sp.iso_depth.high, {img // p for p in patches}))
    if "pyramid" in sp.shapes:
        for p in patches:
            n_max = min(sp.stages.high, space._max_stages(p))
            side = img // p
            for i in range(n_max):
                if i:
                    side = -(-side // 2)
                dims = [_round_to(w * g ** i, step) for w in sp.width.values() for g in sp.width_growth]
                if sp.max_width:
                    dims = [min(d, max(step, sp.max_width // step * step)) for d in dims]
                while len(slots) <= i:
                    slots.append((0, 0, set()))
                d, dep, grids = slots[i]
                slots[i] = (max(d, *dims), max(dep, sp.depth.high), grids | {side})
    stems = []
    for s in sp.stems:
        stem_knobs = _finite(s.knobs, f"stem {s.kind}")
        for p in s.patch_sizes:
            for combo in _product(stem_knobs):
                stems.append((s.kind, p, tuple(sorted(combo.items()))))
    mixers: list[MixerConfig] = []
    for i, (dim, _, grids) in enumerate(slots):
        for m in sp.mixers:
            cls = MIXERS.get(m.name)
            values = _finite(m.knobs, f"mixer {m.name}")
            for g in sorted(grids):
                mixers += enumerate_mixers(i, g, m.name, values,
                                           clamp=lambda k, cls=cls, dim=dim, g=g: clamp_knobs(cls, dim, (g, g), k))
    ratios = list(sp.mlp_ratio)
    return SupernetSpace(
        img_size=img, in_chans=space.in_chans, num_classes=space.num_classes, stems=tuple(stems),
        slots=tuple(SlotSpec(d, dep, tuple(sorted(g))) for d, dep, g in slots), mixers=tuple(mixers),
        pos=tuple(sp.pos), mlp=tuple(sp.mlp), max_mlp_ratio=float(max(ratios)), downsample=tuple(sp.downsample),
        head_pool=tuple(sp.head_pool), layer_scale=any(v is not None for v in sp.layer_scale))


def _finite(knobs: Any, where: str) -> dict[str, list[Any]]:
    out = {}
    for k in knobs:
        if k.choices is None and k.kind != "int":
            raise NasError(f"the supernet evaluator needs finite knob values: give {where} {k.name} as a list of "
                           "choices (a float range cannot be enumerated into shared weights)")
        out[k.name] = k.values()
    return out


def _product(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    import itertools

    names = sorted(values)
    return [dict(zip(names, c, strict=True)) for c in itertools.product(*(values[n] for n in names))]


def sampler_for(space: SearchSpace, fits: Any = None) -> Any:
    """``rng -> ArchSpec``: a uniform genome of the space (``SearchSpace.sample``), redrawn while it
    is invalid or ``fits(genome)`` is false (e.g. over the study's parameter budget)."""
    def sample(rng: random.Random) -> ArchSpec:
        for _ in range(1000):
            try:
                g = space.sample(rng)
            except (InvalidCandidate, ValueError):
                continue
            if fits is None or fits(g):
                return g
        raise NasError("the supernet sampler found no valid genome in 1000 draws; check the space and constraints")
    return sample


def within_params(bank: Any, max_params: float | None) -> Any:
    """A ``fits`` test for ``sampler_for``: the genome's exact parameter count (from its path,
    no FLOP count needed) is within ``max_params``."""
    if not max_params:
        return None
    return lambda g: bank.plan(g).n_params <= max_params


def study_supernet(study: StudySpec, space: SearchSpace, data: Any, progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """The study's trained ``WeightBank`` and its training cost: trained once per study (the
    first caller trains; later calls and processes load the finished checkpoint; an interrupted
    training resumes from it). The recipe is the proxy's (``[evaluator]``, ``[evaluator.recipe]``),
    the budget and path sampling ``[evaluator.supernet]``'s. Worker processes of one study take turns
    through a file lock in the checkpoint folder: one trains, the others then load its result."""
    import fcntl

    folder = supernet_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.lock", "w") as lock:  # one trainer per study; other workers wait, then load
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _train_or_load(study, space, data, folder, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _train_or_load(study: StudySpec, space: SearchSpace, data: Any, folder: Path,
                   progress: bool) -> tuple[Any, dict[str, Any]]:
    from evaluators.supernet import SupernetTrainer, WeightBank, load_bank

    ckpt = folder / SUPERNET_FILE
    cost_file = folder / "cost.json"
    bank = WeightBank(supernet_space(space))
    if cost_file.exists() and ckpt.exists():
        return load_bank(bank, ckpt), json.loads(cost_file.read_text())
    cfg, opts = supernet_recipe(study, len(data.train_y))
    trainer = SupernetTrainer(cfg, steps=opts["steps"], paths_per_step=opts["paths"], strategy=opts["strategy"],
                              checkpoint=ckpt, checkpoint_every=max(10, opts["steps"] // 20), progress=progress,
                              seed=study.seed)
    res = trainer.fit(bank, data, sampler_for(space, within_params(bank, study.constraints.max_params)))
    cost = {"train_time_s": res.total_train_time_s, "steps": res.steps, "paths": res.paths,
            "paths_per_step": opts["paths"], "strategy": res.strategy, "device": res.device,
            "resumed_from": res.resumed_from, "checkpoint": str(ckpt), "final_loss": res.final_loss}
    tmp = cost_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(cost))
    tmp.replace(cost_file)
    return bank, cost


def supernet_recipe(study: StudySpec, n_train: int) -> tuple[Any, dict[str, Any]]:
    """The proxy recipe (``ProxyConfig``) the supernet trains with, and its ``[evaluator.supernet]``
    options with the step budget resolved."""
    from evaluators.proxy import ProxyConfig

    ev = study.evaluator
    cfg = ProxyConfig(epochs=ev.epochs, batch_size=ev.batch_size, lr=ev.lr, weight_decay=ev.weight_decay,
                      device=ev.device, seed=study.seed, count_flops=False, **ev.recipe_dict)
    per_epoch = max(1, n_train // min(cfg.batch_size, n_train))
    sn = ev.supernet
    return cfg, {"steps": sn.steps or 20 * ev.epochs * per_epoch, "paths": sn.paths_per_step,
                 "strategy": sn.strategy, "finetune_steps": sn.finetune_steps}


# --- stage 1: scoring a candidate with inherited weights ---------------------------------------
def evaluate_supernet(te: Any, cand: Any, weights_folder: Path) -> tuple[str, float | None, dict[str, Any], str | None]:
    """``[evaluator] kind = "supernet"`` for ``TrialEvaluator.evaluate``: the candidate's validation
    accuracy with weights inherited from the study's supernet (trained on first use), after
    ``[evaluator.supernet] finetune_steps`` of fine-tuning; with ``save_weights`` the inherited
    (fine-tuned) weights are saved like a trained trial's (``<arch_id>.inherited.safetensors`` in
    ``weights_folder``, ``attrs.WEIGHTS``). Returns ``(status, accuracy, attrs, reason)`` for
    ``nas.objective.Outcome``."""
    import math

    from evaluators.supernet import score_path
    from nas import attrs

    data = te.data()
    if getattr(te, "_supernet", None) is None:
        te._supernet = study_supernet(te.study, te.space, data)
    bank, cost = te._supernet
    cfg, opts = supernet_recipe(te.study, len(data.train_y))
    try:
        score, model = score_path(bank, cand.spec, data, cfg, finetune_steps=opts["finetune_steps"])
    except ValueError as e:  # a genome outside the supernet: refused in one line
        return "failed", None, {}, str(e)
    out = {attrs.ACCURACY: score.accuracy, attrs.SUPERNET_ACCURACY: score.accuracy, attrs.STAGE: "search",
           attrs.TRAIN_TIME_S: score.seconds, attrs.EPOCHS: 0, attrs.EPOCH_BUDGET: 0, attrs.DEVICE: cost["device"],
           attrs.LOSS_PER_EPOCH: [score.loss]}
    if te.study.evaluator.save_weights:
        out[attrs.WEIGHTS] = str(save_inherited_weights(weights_folder, cand.spec, model))
    if score.non_finite or not math.isfinite(score.loss):
        return "failed", None, out, f"{score.non_finite} non-finite validation logits with inherited weights"
    return "ok", float(score.accuracy), out, None


def save_inherited_weights(folder: Path, spec: ArchSpec, model: Any) -> Path:
    """Write a candidate's inherited weights into the study's weights ``folder`` (never over a
    stand-alone-trained file of the same genome)."""
    from nas.export.weights import save_weights

    folder.mkdir(parents=True, exist_ok=True)
    return save_weights(model.cpu(), folder / f"{spec.arch_id}.inherited.safetensors",
                        metadata={"source": "supernet", "arch_id": spec.arch_id})


# --- stage 2: the confirmed front --------------------------------------------------------------
def confirm_front(study: Any, spec: StudySpec, te: Any, out: Any = None) -> list[int]:
    """Train the ``[evaluator.supernet] confirm_top`` most accurate members of the supernet-scored
    front stand-alone with the proxy recipe and store each as a COMPLETE trial with
    ``attrs.STAGE = "confirmed"`` (``attrs.CONFIRMS``: the search trial it confirms), once per
    genome; also records the supernet's training cost as the study attribute
    ``attrs.STUDY_SUPERNET``. Returns the new trials' numbers."""
    import sys

    import optuna

    from nas import attrs
    from nas.front import pareto_front, record_from_trial, study_objectives

    out = out or sys.stdout
    cost_file = supernet_dir(spec) / "cost.json"
    if cost_file.exists():
        study.set_user_attr(attrs.STUDY_SUPERNET, json.loads(cost_file.read_text()))
    objectives = study_objectives(study)
    names = [n for n, _ in objectives]
    trials = study.get_trials(deepcopy=False)
    records = [record_from_trial(t, names) for t in trials]
    front = pareto_front(records, objectives)
    done = {r.arch_id for r in records if r.user_attrs.get(attrs.STAGE) == "confirmed"}
    top = sorted(front, key=lambda r: -(r.accuracy or 0.0))[:spec.evaluator.supernet.confirm_top]
    todo = [r for r in top if r.arch_id not in done]
    if todo:
        print(f"confirming {len(todo)} supernet front member(s) by stand-alone proxy training", file=out)
    numbers = []
    by_number = {t.number: t for t in trials}
    for r in todo:
        src = by_number[r.number]
        cand = te.candidate_for(ArchSpec.from_json(r.genome))
        res = te._proxy(cand, None, None)
        if res.status != "ok":
            print(f"  trial {r.number}: stand-alone training failed: {res.reason}", file=out)
            continue
        ua = {k: v for k, v in src.user_attrs.items() if k not in (attrs.WEIGHTS, attrs.LOSS_PER_EPOCH)}
        ua.update(res.attrs)
        ua.update({attrs.ACCURACY: res.accuracy, attrs.STAGE: "confirmed", attrs.CONFIRMS: r.number,
                   attrs.SUPERNET_ACCURACY: r.accuracy})
        trial = optuna.trial.create_trial(params=src.params, distributions=src.distributions,
                                          values=te.values(cand, res.accuracy), user_attrs=ua,
                                          state=optuna.trial.TrialState.COMPLETE)
        study.add_trial(trial)
        numbers.append(study.get_trials(deepcopy=False)[-1].number)
        print(f"  trial {r.number}: supernet accuracy {r.accuracy:.4f} -> stand-alone {res.accuracy:.4f}", file=out)
    return numbers
