"""An online surrogate that ranks candidate children for ``EvolutionSampler``.

Fitted on the study's latest finished feasible trials (at most ``window``; genome features ->
each objective that needs training or measuring: accuracy, latency): scikit-learn's
``ExtraTreesRegressor`` (Geurts et al. 2006), whose per-tree spread gives an uncertainty. FLOPs
and parameters are not predicted: screening gives them exactly. Each candidate's objective
vector (accuracy optimistic by ``kappa`` tree standard deviations) is compared with the
population's feasible front in the normalised objective space by the additive epsilon
indicator (Zitzler et al. 2003): the candidate that would move the front the most (or fall
least behind it) is proposed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas.study import StudySpec
from search_space.genome import ArchSpec

COSTS = ("flops", "params")


class Surrogate:
    """See the module docstring.

    Args:
        study: the study (space vocabulary, objectives).
        costs: ``spec -> (flops, params)`` (the sampler's cached screening).
        window: fit on at most this many latest finished feasible trials.
        kappa: optimism, in tree standard deviations.
    """

    def __init__(self, study: StudySpec, costs: Callable[[ArchSpec], tuple[int, int]], window: int = 400,
                 kappa: float = 0.5) -> None:
        sp = study.space
        self.objectives = list(study.objectives)
        self.costs, self.window, self.kappa = costs, window, kappa
        self.mixers = list(sp.mixer_names)
        self.stems = [s.kind for s in sp.stems]
        self.pos = list(sp.pos)
        self.mlp = list(sp.mlp)
        self._features: dict[int, np.ndarray] = {}
        self._fitted_on: tuple[int, ...] = ()
        self._models: dict[str, Any] = {}

    # --- features ------------------------------------------------------------------------------
    def features(self, spec: ArchSpec) -> np.ndarray:
        """A fixed-length vector: log costs, shape, depth and width, where each mixer sits (its
        depth share in early and in late stages), stem, patch size, position encoding and MLP."""
        flops, params = self.costs(spec)
        n = len(spec.stages)
        depth = sum(s.depth for s in spec.stages)
        f = [math.log1p(flops), math.log1p(params), float(n == 1), n, depth,
             math.log2(spec.stages[0].dim), math.log2(spec.stages[-1].dim), math.log2(spec.stem.patch_size),
             float(spec.stages[0].mlp_ratio), float(spec.stages[0].layer_scale is not None),
             float(spec.head.pool == "cls")]
        early = dict.fromkeys(self.mixers, 0.0)
        late = dict.fromkeys(self.mixers, 0.0)
        pos = dict.fromkeys(self.pos, 0.0)
        heads = 0.0
        for i, s in enumerate(spec.stages):
            w = s.depth / depth
            lt = (i + 0.5) / n if n > 1 else 0.5
            if s.mixer in early:
                early[s.mixer] += w * (1 - lt)
                late[s.mixer] += w * lt
            if s.pos in pos:
                pos[s.pos] += w
            heads += w * math.log2(max(1, int(s.knob_dict.get("num_heads", 1))))
        f += list(early.values()) + list(late.values()) + list(pos.values()) + [heads]
        f += [float(spec.stem.kind == k) for k in self.stems] + [float(spec.stages[0].mlp == m) for m in self.mlp]
        return np.asarray(f, dtype=np.float64)

    def _feat(self, m: Any) -> np.ndarray:
        x = self._features.get(m.number)
        if x is None:
            x = self._features[m.number] = self.features(m.spec)
        return x

    # --- fit and choose ---------------------------------------------------------------------------
    def fit(self, members: Sequence[Any], seed: int) -> bool:
        """(Re)fit on the latest ``window`` feasible members; False when too few to fit."""
        from sklearn.ensemble import ExtraTreesRegressor

        data = [m for m in members if m.trial.values is not None and all(v <= 0 for v in m.trial.constraints.values())]
        data = sorted(data, key=lambda m: m.number)[-self.window:]
        key = tuple(m.number for m in data)
        if key == self._fitted_on:
            return bool(self._models)
        self._fitted_on = key
        self._models = {}
        if len(data) < 5:
            return False
        x = np.stack([self._feat(m) for m in data])
        for j, o in enumerate(self.objectives):
            if o.name in COSTS:
                continue
            y = np.asarray([m.trial.values[j] for m in data], dtype=np.float64)
            model = ExtraTreesRegressor(n_estimators=24, min_samples_leaf=2, max_features=0.6, random_state=seed % 2**31)
            self._models[o.name] = model.fit(x, y)
        return True

    def predict(self, specs: Sequence[ArchSpec]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Objective name -> (mean, tree standard deviation) for each genome."""
        x = np.stack([self.features(s) for s in specs])
        out = {}
        for name, model in self._models.items():
            per_tree = np.stack([t.predict(x) for t in model.estimators_])
            out[name] = (per_tree.mean(0), per_tree.std(0))
        return out

    def choose(self, pool: Sequence[Any], history: Sequence[Any], children: Sequence[tuple[Any, ArchSpec, str]],
               number: int, seed: int) -> int:
        """Index of the most promising child among ``children`` ((plan, genome, origin) each),
        judged against the front of ``pool`` by a model of ``history`` (finished members); 0 when
        the surrogate cannot be fitted yet."""
        from nas.samplers import trial_seed

        if not self.fit(history, trial_seed(seed, number)):
            return 0
        specs = [c[1] for c in children]
        pred = self.predict(specs)
        cand = []
        for i, s in enumerate(specs):
            flops, params = self.costs(s)
            row = []
            for o in self.objectives:
                if o.name == "flops":
                    v = float(flops)
                elif o.name == "params":
                    v = float(params)
                else:
                    mu, sd = pred[o.name][0][i], pred[o.name][1][i]
                    v = mu + self.kappa * sd if o.direction == "maximize" else mu - self.kappa * sd
                row.append(-v if o.direction == "maximize" else v)
            cand.append(row)
        feas = [m.trial for m in pool if all(v <= 0 for v in m.trial.constraints.values())]
        front = np.asarray([[-v if o.direction == "maximize" else v for v, o in zip(t.values, self.objectives)]
                            for t in feas], dtype=np.float64)
        c = np.asarray(cand, dtype=np.float64)
        if len(front) == 0:
            return 0
        allv = np.vstack([front, c])
        lo, hi = allv.min(0), allv.max(0)
        scale = np.where(hi > lo, hi - lo, 1.0)
        fn, cn = (front - lo) / scale, (c - lo) / scale
        # additive epsilon of each candidate against every front point: max_i (c_i - f_i)
        eps = np.min(np.max(cn[:, None, :] - fn[None, :, :], axis=2), axis=1)
        return int(np.argmin(eps))
