"""Variation on the genome, in the vocabulary of ``SearchSpace.suggest``.

A *plan* is the dict of parameter values ``SearchSpace.suggest`` asks for (``shape``, ``stem``,
``s1.mixer``, ``s1.window.window_size``, ...). A plan becomes a genome by *replaying* it
through ``suggest`` with a ``PlanTrial``: every value the plan holds is answered (moved to the
nearest allowed value if it left its range), every value it lacks is drawn at random, and
``suggest`` applies its own clamping (heads to a divisor of the width, windows to the grid,
position encodings to what the mixer supports). So every child is a valid genome by the same
rules as every suggested one, and the trial's parameters still name the genes.

Operators (``mutate``): change one stage's mixer (knobs the two mixers share are kept, the rest
drawn), step one knob, depth +-1 step, width +-1 step, insert or remove a pyramid stage,
isotropic <-> pyramid, change the stem, patch size, position encoding, channel MLP or another
global choice; ``crossover`` exchanges whole stages (depth, mixer and its knobs) between two
parents of the same shape.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from nas.space import InvalidCandidate, SearchSpace
from search_space.genome import ArchSpec

Plan = dict[str, Any]

_STAGE = re.compile(r"^s(\d+)\.(.+)$")


@dataclass(frozen=True)
class Dist:
    """The distribution ``suggest`` asked a parameter under (recorded on replay)."""

    kind: str                            # cat | int | float
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    @classmethod
    def from_optuna(cls, d: Any) -> Dist:
        """The same distribution as an Optuna ``BaseDistribution``."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        if isinstance(d, CategoricalDistribution):
            return cls("cat", tuple(d.choices))
        kind = "int" if isinstance(d, IntDistribution) else "float"
        return cls(kind, (), d.low, d.high, d.step, d.log)

    def contains(self, v: Any) -> bool:
        if self.kind == "cat":
            return any(_same(v, c) for c in self.choices)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not self.low <= v <= self.high:
            return False
        if self.kind == "int":
            return float(v).is_integer() and (self.log or int(v - self.low) % int(self.step or 1) == 0)
        return True

    def nearest(self, v: Any, rng: random.Random) -> Any:
        """``v`` if allowed, else the closest allowed value (a random choice for non-numbers)."""
        if self.contains(v):
            return next(c for c in self.choices if _same(v, c)) if self.kind == "cat" else v
        if self.kind == "cat":
            nums = [c for c in self.choices if _is_num(c)]
            if _is_num(v) and nums:
                return min(nums, key=lambda c: (abs(c - v), c))
            return rng.choice(list(self.choices))
        if not _is_num(v):
            return self.draw(rng)
        x = min(max(float(v), self.low), self.high)
        if self.kind == "int":
            step = 1 if self.log else int(self.step or 1)
            return int(self.low + round((x - self.low) / step) * step)
        return x

    def draw(self, rng: random.Random) -> Any:
        """A uniform draw, as ``nas.space.RandomTrial`` makes it."""
        if self.kind == "cat":
            return rng.choice(list(self.choices))
        if self.kind == "int":
            if self.log:
                return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
            return rng.randrange(int(self.low), int(self.high) + 1, int(self.step or 1))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        v = rng.uniform(self.low, self.high)
        return self.low + round((v - self.low) / self.step) * self.step if self.step else v

    def step_from(self, v: Any, direction: int, rng: random.Random) -> Any:
        """The neighbouring value in ``direction`` (+1/-1): the next choice in order for ordered
        choices, another choice for unordered ones, one step for ranges."""
        if self.kind == "cat":
            nums = sorted(c for c in self.choices if _is_num(c))
            if len(nums) == len(self.choices) and _is_num(v):
                i = min(range(len(nums)), key=lambda j: abs(nums[j] - v))
                return nums[min(max(i + direction, 0), len(nums) - 1)]
            others = [c for c in self.choices if not _same(c, v)]
            return rng.choice(others) if others else v
        if self.kind == "int":
            if self.log:
                return self.nearest(int(round(v * (2.0 ** direction))), rng)
            return self.nearest(int(v) + direction * int(self.step or 1), rng)
        span = (self.high - self.low) / 4 if not self.step else self.step
        return self.nearest(float(v) + direction * span, rng)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (_is_num(a) and _is_num(b) and a == b)


class PlanTrial:
    """The ``suggest_*`` surface of a trial that answers from a plan (see the module docstring)
    and records what ``suggest`` asked: ``params`` (name -> value) and ``dists``."""

    def __init__(self, plan: Plan, rng: random.Random) -> None:
        self.plan, self.rng = plan, rng
        self.params: Plan = {}
        self.dists: dict[str, Dist] = {}

    def _answer(self, name: str, dist: Dist) -> Any:
        self.dists[name] = dist
        v = dist.nearest(self.plan[name], self.rng) if name in self.plan else dist.draw(self.rng)
        self.params[name] = v
        return v

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._answer(name, Dist("cat", tuple(choices)))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._answer(name, Dist("int", (), low, high, step, log))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return self._answer(name, Dist("float", (), low, high, step, log))


class GenomeOps:
    """Random genomes, mutation and crossover of plans for one ``SearchSpace``."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.sp = space.space
        self.dists: dict[str, Dist] = {}          # every distribution seen on replay, by name
        self.mixer_knobs = {m.name: {k.name for k in m.knobs} for m in self.sp.mixers}
        self.stem_kinds = [s.kind for s in self.sp.stems]

    # --- plan -> genome ----------------------------------------------------------------------
    def replay(self, plan: Plan, rng: random.Random) -> tuple[Plan, ArchSpec]:
        """The params ``suggest`` asks for when answered from ``plan``, and the genome.

        Raises:
            InvalidCandidate: no clamping could make the genome valid.
        """
        t = PlanTrial(plan, rng)
        spec = self.space.suggest(t)
        self.dists.update(t.dists)
        return t.params, spec

    def random(self, rng: random.Random) -> tuple[Plan, ArchSpec]:
        return self.replay({}, rng)

    # --- variation ---------------------------------------------------------------------------
    def operators(self, plan: Plan) -> list[str]:
        """The mutation operators that can change ``plan``."""
        ops = ["mixer", "knob", "depth", "width", "stem", "patch", "pos", "mlp", "global"]
        if len(self.sp.shapes) > 1:
            ops.append("shape")
        if plan.get("shape") == "pyramid" and self.sp.stages.low < self.sp.stages.high:
            ops.append("stage")
        return ops

    def mutate(self, plan: Plan, rng: random.Random, op: str | None = None) -> tuple[Plan, str]:
        """A copy of ``plan`` changed by one operator (random unless ``op`` is given); returns the
        child plan (replay it) and the operator's name."""
        op = op or rng.choice(self.operators(plan))
        child = dict(plan)
        getattr(self, f"_mut_{op}")(child, rng)
        return child, op

    def crossover(self, a: Plan, b: Plan, rng: random.Random) -> Plan:
        """Uniform crossover of whole stages (and of the global gene groups) of two parents of
        the same shape; parents of different shapes give a copy of ``a``."""
        if a.get("shape") != b.get("shape"):
            return dict(a)
        child = dict(a)
        groups = [("stem",), ("pos",), ("mlp", "mlp_ratio"), ("layer_scale", "head_pool")]
        if a.get("shape") == "pyramid":
            groups += [("width", "width_growth"), ("downsample",), ("mixer",)]
        else:
            groups += [("iso.depth",), ("iso.width",)]
        for g in groups:
            if rng.random() < 0.5:
                for k in g:
                    self._take(child, b, k)
        if a.get("shape") == "pyramid":
            if rng.random() < 0.5 and "n_stages" in b:
                child["n_stages"] = b["n_stages"]
            for i in range(int(child.get("n_stages", 0))):
                if rng.random() < 0.5 and f"s{i}.depth" in b:
                    _copy_stage(b, i, child, i)
        elif rng.random() < 0.5:  # the isotropic model's one stage: mixer and its knobs
            for k in [k for k in child if k.startswith("iso.") and k not in ("iso.depth", "iso.width")]:
                del child[k]
            child.update({k: v for k, v in b.items() if k.startswith("iso.") and k not in ("iso.depth", "iso.width")})
        return child

    @staticmethod
    def _take(child: Plan, src: Plan, key: str) -> None:
        """Copy gene ``key`` from ``src`` with the keys that hang off it (``stem`` -> ``stem.*``,
        ``mixer`` -> ``all.*``)."""
        prefix = {"stem": "stem.", "mixer": "all."}.get(key)
        if prefix:
            for k in [k for k in child if k.startswith(prefix)]:
                del child[k]
            child.update({k: v for k, v in src.items() if k.startswith(prefix)})
        if key in src:
            child[key] = src[key]

    # --- operators -----------------------------------------------------------------------------
    def _stage_prefixes(self, p: Plan) -> list[str]:
        if p.get("shape") == "isotropic":
            return ["iso"]
        if not self.sp.per_stage_mixer:
            return ["all"]
        return [f"s{i}" for i in range(int(p.get("n_stages", 1)))]

    def _mixer_key(self, prefix: str) -> str:
        return "mixer" if prefix == "all" else f"{prefix}.mixer"

    def _mut_mixer(self, p: Plan, rng: random.Random) -> None:
        names = self.sp.mixer_names
        prefix = rng.choice(self._stage_prefixes(p))
        key = self._mixer_key(prefix)
        old = p.get(key)
        others = [m for m in names if m != old]
        if not others:
            return
        new = rng.choice(others)
        p[key] = new
        shared = self.mixer_knobs.get(new, set())
        for k in [k for k in p if k.startswith(f"{prefix}.{old}.")]:
            knob = k[len(f"{prefix}.{old}."):]
            v = p.pop(k)
            if knob in shared:  # e.g. num_heads: kept; the new mixer's other knobs are drawn
                p[f"{prefix}.{new}.{knob}"] = v

    def _knob_keys(self, p: Plan) -> list[str]:
        out = []
        for prefix in self._stage_prefixes(p):
            m = p.get(self._mixer_key(prefix))
            out += [k for k in p if k.startswith(f"{prefix}.{m}.")]
        kind = p.get("stem")
        out += [k for k in p if k.startswith(f"stem.{kind}.") and not k.endswith(".patch_size")]
        return out

    def _step(self, p: Plan, key: str, rng: random.Random) -> bool:
        """Move gene ``key`` one step (the other way at the end of its range); False if it
        cannot move."""
        d = self.dists.get(key)
        if d is None or key not in p:
            return False
        direction = rng.choice((-1, 1))
        new = d.step_from(p[key], direction, rng)
        if new == p[key]:
            new = d.step_from(p[key], -direction, rng)
        moved = new != p[key]
        p[key] = new
        return moved

    def _mut_knob(self, p: Plan, rng: random.Random) -> None:
        keys = self._knob_keys(p)
        if keys:
            self._step(p, rng.choice(keys), rng)

    def _mut_depth(self, p: Plan, rng: random.Random) -> None:
        keys = ["iso.depth"] if p.get("shape") == "isotropic" else \
            [f"s{i}.depth" for i in range(int(p.get("n_stages", 1))) if f"s{i}.depth" in p]
        if keys:
            self._step(p, rng.choice(keys), rng)

    def _mut_width(self, p: Plan, rng: random.Random) -> None:
        self._step(p, "iso.width" if p.get("shape") == "isotropic" else "width", rng)

    def _mut_stem(self, p: Plan, rng: random.Random) -> None:
        old = p.get("stem")
        others = [k for k in self.stem_kinds if k != old]
        if not others:
            self._step(p, f"stem.{old}.patch_size", rng)
            return None
        new = rng.choice(others)
        patch = p.get(f"stem.{old}.patch_size")
        for k in [k for k in p if k.startswith("stem.")]:
            del p[k]
        p["stem"] = new
        if patch is not None:
            p[f"stem.{new}.patch_size"] = patch  # moved to the nearest allowed on replay
        return None

    def _mut_patch(self, p: Plan, rng: random.Random) -> None:
        if not self._step(p, f"stem.{p.get('stem')}.patch_size", rng) and len(self.stem_kinds) > 1:
            self._mut_stem(p, rng)  # this stem has one patch size: another stem changes it

    def _mut_pos(self, p: Plan, rng: random.Random) -> None:
        self._step(p, "pos", rng)

    def _mut_mlp(self, p: Plan, rng: random.Random) -> None:
        self._step(p, rng.choice(["mlp", "mlp_ratio"]), rng)

    def _mut_global(self, p: Plan, rng: random.Random) -> None:
        keys = [k for k in ("layer_scale", "head_pool", "width_growth", "downsample") if k in p
                and len(self.dists.get(k, Dist("cat")).choices) > 1]
        if keys:
            self._step(p, rng.choice(keys), rng)
        else:
            self._mut_mlp(p, rng)

    def _mut_stage(self, p: Plan, rng: random.Random) -> None:
        n = int(p.get("n_stages", 1))
        lo, hi = self.sp.stages.low, self.sp.stages.high
        grow = n < hi and (n <= lo or rng.random() < 0.5)
        if grow:
            j = rng.randrange(0, n + 1)          # the new stage's index
            for i in range(n - 1, j - 1, -1):    # shift s_j.. up by one
                _move_stage(p, i, i + 1)
            src = j - 1 if j > 0 else 1          # a copy of its neighbour (then varied by replay)
            if f"s{src}.depth" in p:
                _copy_stage(p, src, p, j)
            p["n_stages"] = n + 1
        elif n > lo:
            j = rng.randrange(0, n)
            _drop_stage(p, j)
            for i in range(j + 1, n):
                _move_stage(p, i, i - 1)
            p["n_stages"] = n - 1

    def _mut_shape(self, p: Plan, rng: random.Random) -> None:
        sp = self.sp
        if p.get("shape") == "isotropic":
            n = sp.stages.low
            mixer = p.get("iso.mixer")
            knobs = {k[len(f"iso.{mixer}."):]: v for k, v in p.items() if k.startswith(f"iso.{mixer}.")}
            depth = p.get("iso.depth", sp.depth.low)
            for k in [k for k in p if k.startswith("iso.")]:
                del p[k]
            p.update(shape="pyramid", n_stages=n, width=p.get("width", sp.width.low))
            per = max(sp.depth.low, min(sp.depth.high, round(depth / n)))
            prefixes = [f"s{i}" for i in range(n)] if sp.per_stage_mixer else ["all"]
            if not sp.per_stage_mixer:
                p["mixer"] = mixer
            for i in range(n):
                p[f"s{i}.depth"] = per
            for pre in prefixes:
                if sp.per_stage_mixer:
                    p[f"{pre}.mixer"] = mixer
                p.update({f"{pre}.{mixer}.{k}": v for k, v in knobs.items()})
        else:
            n = int(p.get("n_stages", 1))
            prefix = rng.choice(self._stage_prefixes(p))
            mixer = p.get(self._mixer_key(prefix))
            knobs = {k[len(f"{prefix}.{mixer}."):]: v for k, v in p.items() if k.startswith(f"{prefix}.{mixer}.")}
            depth = sum(int(p.get(f"s{i}.depth", sp.depth.low)) for i in range(n))
            width = p.get("width", sp.width.low)
            for k in [k for k in p if _STAGE.match(k) or k.startswith("all.")
                      or k in ("n_stages", "width", "width_growth", "downsample", "mixer")]:
                del p[k]
            p.update({"shape": "isotropic", "iso.depth": depth, "iso.width": width, "iso.mixer": mixer})
            p.update({f"iso.{mixer}.{k}": v for k, v in knobs.items()})


def _stage_keys(p: Plan, i: int) -> list[str]:
    return [k for k in p if k.startswith(f"s{i}.")]


def _copy_stage(src: Plan, i: int, dst: Plan, j: int) -> None:
    for k in _stage_keys(dst, j):
        del dst[k]
    dst.update({f"s{j}." + k[len(f"s{i}."):]: v for k, v in src.items() if k.startswith(f"s{i}.")})


def _move_stage(p: Plan, i: int, j: int) -> None:
    moved = {f"s{j}." + k[len(f"s{i}."):]: p.pop(k) for k in _stage_keys(p, i)}
    for k in _stage_keys(p, j):
        del p[k]
    p.update(moved)


def _drop_stage(p: Plan, i: int) -> None:
    for k in _stage_keys(p, i):
        del p[k]


__all__ = ["Dist", "GenomeOps", "InvalidCandidate", "Plan", "PlanTrial"]
