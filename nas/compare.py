"""A fair comparison of token mixers at equal compute (``nas compare``).

Protocol of Hu et al. 2023, "Demystify Transformers & Convolutions in Modern Image Deep
Networks" (STM-Evaluation, seed 002): fix the network-level design (stem, stages, downsamplers,
head) and the block-level design (norms, channel MLP, layer scale), swap only the spatial token
mixer, and fit each model to the same compute so that accuracy differences come from the mixer.

Here: every stage of a skeleton genome gets the mixer (its shared knobs kept where the mixer has
them, heads at the skeleton's head width, knobs clamped to each stage's grid; an attention-internal
position encoding the mixer does not accept is dropped). The widths are then scaled together
(multiples of ``width_step`` channels, bisection on the scale, then the nearest rounding per stage)
until the model's MACs (``evaluators.screen``: weight-free) are within ``tolerance`` of the budget;
if no width gets there, the deepest stage loses or gains blocks. Each fitted model is trained with
one proxy recipe (``evaluators.ProxyTrainer`` on the bundled digits data by default) for every
seed; the seed varies the initialisation and the batch order, the data split is fixed.

Runs are stored as trials of an Optuna study (``nas.store.open_storage``; attributes from
``nas.attrs`` plus the mixer and the seed), so ``nas front`` and the dashboard read them, and a
rerun with the same study reuses the (mixer, seed) runs it already finished. Whether two mixers
differ beyond the seed spread is decided by Welch's t-test on the per-seed accuracies with a Holm
correction over all pairs (``significance``).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas import attrs
from nas.errors import NasError
from search_space.genome import ArchSpec, StageSpec

# trial / study attributes of a comparison (beside the nas.attrs schema)
COMPARE_MIXER = "compare_mixer"    # the token mixer this trial's model uses (str)
COMPARE_SEED = "compare_seed"      # the training seed (int)
COMPARE_RECIPE = "compare_recipe"  # the recipe JSON: reused only when identical (str)
STUDY_COMPARE = "compare"          # study attribute: the CompareConfig, skeleton and budget (dict)

DEFAULT_HEAD_DIM = 32  # head width for a mixer with heads on a stage whose skeleton mixer has none


@dataclass(frozen=True)
class CompareConfig:
    """What ``nas compare`` runs.

    Args:
        mixers: registered token mixers to compare (at least two).
        flops: MACs budget per image at ``img_size``; None: the skeleton's own MACs.
        tolerance: largest relative distance of a fitted model's MACs from the budget (0.02 = 2%).
        seeds: training seeds; at least two for the significance test.
        epochs, batch_size, lr: the proxy recipe (``evaluators.ProxyConfig``; other fields default).
        img_size: input side (the skeleton is re-targeted to it); dataset/subset: the data.
        device: training device (``auto``: CUDA when present).
        latency_device: where latency is measured (batch ``latency_batch``, float32); None: skip it.
        alpha: significance level of the Holm-corrected Welch tests.
        width_step: channel widths are multiples of this.
    """

    mixers: tuple[str, ...]
    flops: int | None = None
    tolerance: float = 0.02
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    img_size: int = 32
    dataset: str = "digits"
    data_root: str | None = None
    subset: int | None = None
    device: str = "auto"
    latency_device: str | None = "cpu"
    latency_batch: int = 1
    alpha: float = 0.05
    width_step: int = 8

    def __post_init__(self) -> None:
        if len(self.mixers) < 2 or len(set(self.mixers)) != len(self.mixers):
            raise NasError(f"compare needs at least two different mixers, got {', '.join(self.mixers) or 'none'}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise NasError("compare needs one or more different seeds")
        if not 0 < self.tolerance < 1:
            raise NasError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.flops is not None and self.flops <= 0:
            raise NasError(f"the FLOP budget must be positive, got {self.flops}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise NasError("epochs and batch size must be at least 1 and lr positive")
        if self.width_step < 1:
            raise NasError(f"width_step must be at least 1, got {self.width_step}")

    def recipe(self) -> dict[str, Any]:
        """The training recipe and data: runs are reused only when this is identical."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "img_size": self.img_size,
                "dataset": self.dataset, "subset": self.subset, "device": self.device}


@dataclass(frozen=True)
class FittedModel:
    """One mixer in the skeleton, fitted to the budget."""

    mixer: str
    spec: ArchSpec
    flops: int
    params: int
    costs: dict[str, Any]

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.dim for s in self.spec.stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.spec.stages)


@dataclass
class Run:
    """One (mixer, seed) training run."""

    mixer: str
    seed: int
    trial: int
    accuracy: float | None
    reused: bool = False
    failure: str | None = None


@dataclass
class MixerSummary:
    """Accuracy over seeds (mean, sample standard deviation, range) and the costs of one mixer."""

    mixer: str
    model: FittedModel
    accuracies: list[float]
    latency_ms: float | None = None
    latency_spread_ms: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else None


@dataclass(frozen=True)
class PairTest:
    """Welch's t-test of two mixers' per-seed accuracies; ``p_holm`` is Holm-adjusted over all pairs."""

    a: str
    b: str
    diff: float          # mean(a) - mean(b), accuracy in [0, 1] units
    p: float
    p_holm: float
    significant: bool


@dataclass
class CompareResult:
    config: CompareConfig
    skeleton: str
    budget: int
    study: str
    storage: str
    summaries: list[MixerSummary]
    tests: list[PairTest]
    data_sizes: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "skeleton": self.skeleton, "budget_flops": self.budget, "tolerance": self.config.tolerance,
            "study": self.study, "storage": self.storage, "config": asdict(self.config),
            "mixers": [{"mixer": s.mixer, "flops": s.model.flops, "params": s.model.params,
                        "widths": list(s.model.widths), "depths": list(s.model.depths),
                        "latency_ms": s.latency_ms, "latency_spread_ms": s.latency_spread_ms,
                        "accuracies": s.accuracies, "mean": s.mean, "std": s.std, "failures": s.failures,
                        "arch_id": s.model.spec.arch_id} for s in self.summaries],
            "tests": [asdict(t) for t in self.tests],
            "test": "Welch's t-test on per-seed accuracies, Holm-corrected over all pairs",
        }


# --------------------------------------------------------------------------- fitting


def with_mixer(skeleton: ArchSpec, mixer: str | None, widths: tuple[int, ...] | None = None,
               depths: tuple[int, ...] | None = None) -> ArchSpec:
    """The skeleton with ``mixer`` in every stage (and the given widths/depths), knobs fitted.

    Shared knobs of the skeleton's stage (``window_size``, ``sr_ratio``, ...) are kept where the
    mixer has them; ``num_heads`` follows the skeleton's head width (32 where it has none); knobs
    are clamped to each stage's grid (``nas.space.clamp_knobs``). ``mixer=None`` keeps each stage's
    own mixer (the skeleton re-targeted to its ``img_size``).

    Raises:
        NasError: the mixer is unknown, or cannot be built on some stage (the reason is named).
    """
    widths = widths or tuple(s.dim for s in skeleton.stages)
    depths = depths or tuple(s.depth for s in skeleton.stages)
    stages = tuple(_fit_stage(i, s, mixer or s.mixer, dim, depth, grid) for i, (s, dim, depth, grid)
                   in enumerate(zip(skeleton.stages, widths, depths, skeleton.stage_grids())))
    try:
        return skeleton.replace(stages=stages).validate()
    except ValueError as e:
        raise NasError(f"mixer {mixer!r} in this skeleton: {e}") from None


def _fit_stage(i: int, s: StageSpec, mixer: str, dim: int, depth: int, grid: tuple[int, int]) -> StageSpec:
    """Stage ``s`` with ``mixer`` at ``dim`` channels and ``depth`` blocks, its knobs fitted to ``grid``."""
    from dataclasses import replace

    from nas.space import clamp_knobs
    from operators import MIXERS, POS_ENCODINGS

    cls = MIXERS.get(mixer)
    known = cls.knobs()
    old = s.knob_dict
    knobs = {k: v for k, v in old.items() if k in known and k != "num_heads"}
    if "num_heads" in known:
        head_dim = s.dim / old["num_heads"] if old.get("num_heads") else DEFAULT_HEAD_DIM
        knobs["num_heads"] = max(1, int(dim // head_dim))
    knobs = clamp_knobs(cls, dim, grid, knobs)
    if (why := cls.check(dim, grid, knobs)):
        raise NasError(f"mixer {mixer!r} does not fit stage {i} ({grid[0]}x{grid[1]} grid, width {dim}): {why}")
    pos = s.pos
    if POS_ENCODINGS.get(pos).placement == "attention" and pos not in cls.supported_pos:
        pos = "none"
    return replace(s, dim=int(dim), depth=int(depth), mixer=mixer, mixer_knobs=knobs, pos=pos)


def fit_to_budget(skeleton: ArchSpec, mixer: str, budget: int, tolerance: float = 0.02,
                  width_step: int = 8) -> FittedModel:
    """``mixer`` in ``skeleton`` with widths (and if needed depths) fitted to ``budget`` MACs.

    Widths keep the skeleton's proportions as far as multiples of ``width_step`` allow; among the
    models within ``tolerance`` of the budget the most proportional one wins. If none exists at
    the skeleton's depths, the deepest stage is made shallower or deeper, one block at a time.

    Raises:
        NasError: no width and depth within reach gets within ``tolerance`` (the closest is named).
    """
    from evaluators.screening import screen

    base = [s.dim for s in skeleton.stages]
    cache: dict[tuple, tuple[int, int, dict[str, Any], ArchSpec] | None] = {}
    errors: list[str] = []

    def cost(widths: tuple[int, ...], depths: tuple[int, ...]):
        key = (widths, depths)
        if key not in cache:
            try:
                spec = with_mixer(skeleton, mixer, widths, depths)
                c = screen(spec)
                cache[key] = (c.flops, c.params, c.to_dict(), spec)
            except (NasError, ValueError) as e:
                cache[key] = None
                errors.append(str(e).splitlines()[0])
        return cache[key]

    def widths_at(alpha: float, rounding: Callable[[float], int] = round) -> tuple[int, ...]:
        return tuple(max(1, rounding(alpha * b / width_step)) * width_step for b in base)

    closest: tuple[float, tuple, tuple] | None = None
    for depths in _depth_variants(tuple(s.depth for s in skeleton.stages)):
        lo, hi = width_step / max(base) * 0.999, 32.0
        c_lo, c_hi = cost(widths_at(lo), depths), cost(widths_at(hi), depths)
        if c_lo is None or c_hi is None or c_lo[0] > budget * (1 + tolerance) or c_hi[0] < budget * (1 - tolerance):
            if c_lo is not None:  # remember how close the narrowest model came
                gap = abs(c_lo[0] / budget - 1)
                if closest is None or gap < closest[0]:
                    closest = (gap, widths_at(lo), depths)
            continue
        for _ in range(40):  # bisection on the width scale, in log space
            mid = math.sqrt(lo * hi)
            c = cost(widths_at(mid), depths)
            if c is None:
                break
            lo, hi = (mid, hi) if c[0] < budget else (lo, mid)
            if hi / lo < 1.001:
                break
        alpha = math.sqrt(lo * hi)
        best = None
        for scale in (1 + 0.01 * k for k in range(-10, 11)):
            a = alpha * scale
            exact = [a * b / width_step for b in base]
            for choice in itertools.product(*[(math.floor(e), math.ceil(e)) for e in exact]):
                widths = tuple(max(1, c) * width_step for c in choice)
                c = cost(widths, depths)
                if c is None:
                    continue
                gap = abs(c[0] / budget - 1)
                if closest is None or gap < closest[0]:
                    closest = (gap, widths, depths)
                if gap > tolerance:
                    continue
                ratios = [math.log(w / b) for w, b in zip(widths, base)]
                spread = max(ratios) - min(ratios)  # 0: exactly the skeleton's proportions
                key = (round(spread, 6), gap)
                if best is None or key < best[0]:
                    best = (key, widths)
        if best is not None:
            flops, params, costs, spec = cost(best[1], depths)
            return FittedModel(mixer, spec, int(flops), int(params), costs)
    hint = "" if closest is not None or not errors else f"; {errors[-1]}"
    if closest is not None:
        hint = (f"; closest: widths {list(closest[1])}, depths {list(closest[2])} at "
                f"{closest[0]:+.1%} from the budget" if closest[0] != 0 else "")
    raise NasError(f"mixer {mixer!r}: no width or depth of this skeleton is within {tolerance:.0%} of the "
                   f"budget {budget:,} MACs{hint}")


def _depth_variants(depths: tuple[int, ...], reach: int = 4) -> list[tuple[int, ...]]:
    """The skeleton's depths, then its deepest stage with 1, -1, 2, -2, ... blocks more (at least 1)."""
    i = max(range(len(depths)), key=lambda j: (depths[j], j))
    out = [depths]
    for k in range(1, reach + 1):
        for sign in (-1, 1):
            d = depths[i] + sign * k
            if d >= 1:
                out.append(depths[:i] + (d,) + depths[i + 1:])
    return out


# --------------------------------------------------------------------------- statistics


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances; ``scipy.stats.ttest_ind``).

    Two samples without spread: 1.0 if their means are equal, 0.0 if not (the difference exceeds a
    zero spread). Fewer than two values on a side: NaN (no test possible).
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def significance(summaries: list[MixerSummary], alpha: float = 0.05) -> list[PairTest]:
    """Every pair of mixers: difference of mean accuracy, Welch's p and its Holm adjustment."""
    pairs = [(a, b) for a, b in itertools.combinations(summaries, 2) if a.accuracies and b.accuracies]
    raw = [welch_p(a.accuracies, b.accuracies) for a, b in pairs]
    finite = [p for p in raw if not math.isnan(p)]
    adj_iter = iter(holm(finite))
    out = []
    for (a, b), p in zip(pairs, raw):
        p_holm = float("nan") if math.isnan(p) else next(adj_iter)
        hi, lo = (a, b) if a.mean >= b.mean else (b, a)
        out.append(PairTest(hi.mixer, lo.mixer, hi.mean - lo.mean, p, p_holm,
                            bool(not math.isnan(p_holm) and p_holm < alpha)))
    return sorted(out, key=lambda t: (not t.significant, t.p_holm if not math.isnan(t.p_holm) else 2.0))


# --------------------------------------------------------------------------- running


def run_compare(skeleton: ArchSpec, cfg: CompareConfig, storage_url: str, study_name: str,
                skeleton_label: str = "", log: Callable[[str], None] = print) -> CompareResult:
    """Fit, train and store every (mixer, seed); see the module docstring.

    Raises:
        NasError: an unknown mixer, a mixer that cannot reach the budget, or an unreachable store.
    """
    import optuna
    import torch

    from evaluators.data import DataSpec, load_dataset
    from evaluators.proxy import ProxyConfig, ProxyTrainer
    from evaluators.screening import screen
    from nas.objective import Candidate, measure_latency, set_user_attrs
    from nas.store import code_version, open_storage
    from nas.study import LatencySpec
    from operators import MIXERS
    from search_space import build_model

    for m in cfg.mixers:
        MIXERS.get(m)  # unknown names fail before any work, with the known ones listed
    data = load_dataset(DataSpec(cfg.dataset, root=cfg.data_root, img_size=cfg.img_size, subset=cfg.subset,
                                 in_chans=skeleton.in_chans))
    skeleton = skeleton.replace(img_size=cfg.img_size, num_classes=data.num_classes)
    budget = int(cfg.flops) if cfg.flops is not None else screen(with_mixer(skeleton, None)).flops
    log(f"budget {budget:,} MACs per image at {cfg.img_size} px (within {cfg.tolerance:.0%}); "
        f"{cfg.dataset}: {len(data.train_y)} train / {len(data.val_y)} val images")
    fitted = []
    for m in cfg.mixers:
        f = fit_to_budget(skeleton, m, budget, cfg.tolerance, cfg.width_step)
        log(f"  {m}: widths {list(f.widths)}, depths {list(f.depths)}, {f.flops:,} MACs "
            f"({f.flops / budget - 1:+.2%}), {f.params:,} params")
        fitted.append(f)

    storage = open_storage(storage_url, heartbeat_s=None)
    study = optuna.create_study(study_name=study_name, storage=storage, directions=["maximize", "minimize"],
                                load_if_exists=True)
    study.set_user_attr(attrs.STUDY_OBJECTIVES, [{"name": "accuracy", "direction": "maximize"},
                                                  {"name": "flops", "direction": "minimize"}])
    study.set_user_attr(STUDY_COMPARE, {"skeleton": skeleton_label, "skeleton_genome": skeleton.to_json(),
                                        "budget_flops": budget, "config": json.loads(json.dumps(asdict(cfg)))})
    recipe = json.dumps(cfg.recipe(), sort_keys=True)
    done = {(t.user_attrs.get(COMPARE_MIXER), t.user_attrs.get(COMPARE_SEED), t.user_attrs.get(attrs.ARCH_ID)): t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get(COMPARE_RECIPE) == recipe}
    version = code_version()
    summaries = []
    for f in fitted:
        lat = None
        if cfg.latency_device:
            lat = measure_latency(f.spec, LatencySpec(cfg.latency_device, cfg.latency_batch), storage_url)
        cand = Candidate(f.spec, f.costs, {}, lat)
        summary = MixerSummary(f.mixer, f, [], lat["latency_ms"] if lat else None, lat["spread_ms"] if lat else None)
        for seed in cfg.seeds:
            prior = done.get((f.mixer, seed, f.spec.arch_id))
            if prior is not None:
                summary.accuracies.append(float(prior.user_attrs[attrs.ACCURACY]))
                log(f"  {f.mixer} seed {seed}: accuracy {summary.accuracies[-1]:.4f} (trial {prior.number}, reused)")
                continue
            trial = study.ask()
            set_user_attrs(trial, {**cand.attrs(), attrs.CODE_VERSION: version, COMPARE_MIXER: f.mixer,
                                   COMPARE_SEED: seed, COMPARE_RECIPE: recipe})
            torch.manual_seed(seed)
            model = build_model(f.spec)
            res = ProxyTrainer(ProxyConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                                           device=cfg.device, count_flops=False)).fit(
                model, data, flops_per_image=f.flops)
            set_user_attrs(trial, attrs.proxy_result_attrs(res))
            if res.status == "ok" and res.accuracy is not None and math.isfinite(res.accuracy):
                study.tell(trial, [float(res.accuracy), float(f.flops)])
                summary.accuracies.append(float(res.accuracy))
                log(f"  {f.mixer} seed {seed}: accuracy {res.accuracy:.4f} ({res.wall_time_s:.1f} s, trial {trial.number})")
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                summary.failures.append(f"seed {seed}: {res.status}: {res.reason}")
                log(f"  {f.mixer} seed {seed}: FAILED ({res.status}: {res.reason})")
        summaries.append(summary)
    return CompareResult(cfg, skeleton_label, budget, study_name, storage_url, summaries,
                         significance(summaries, cfg.alpha), (len(data.train_y), len(data.val_y)))


# --------------------------------------------------------------------------- reporting


def format_table(res: CompareResult) -> str:
    """The comparison as a text table plus the list of significant differences."""
    from nas.study import format_count

    head = ["mixer", "widths", "depths", "FLOPs", "vs budget", "params", "latency_ms", "accuracy (mean ± std)",
            "seeds"]
    rows = []
    for s in res.summaries:
        acc = "-" if s.mean is None else (f"{s.mean:.4f} ± {s.std:.4f}" if s.std is not None else f"{s.mean:.4f}")
        lat = "-" if s.latency_ms is None else f"{s.latency_ms:.3g} ± {s.latency_spread_ms:.2g}"
        rows.append([s.mixer, "/".join(map(str, s.model.widths)), "/".join(map(str, s.model.depths)),
                     format_count(s.model.flops), f"{s.model.flops / res.budget - 1:+.2%}",
                     format_count(s.model.params), lat, acc,
                     f"{len(s.accuracies)}" + (f" ({len(s.failures)} failed)" if s.failures else "")])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [f"nas compare: {res.skeleton} at {res.config.img_size} px, budget {format_count(res.budget)} MACs "
             f"(±{res.config.tolerance:.0%}), {res.config.dataset} ({res.data_sizes[0]} train / {res.data_sizes[1]} "
             f"val), {len(res.config.seeds)} seeds x {res.config.epochs} epochs",
             "  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("")
    lines.append(f"Differences beyond the seed spread (Welch's t-test on per-seed accuracy, Holm-corrected over "
                 f"{len(res.tests)} pairs, alpha {res.config.alpha}):")
    sig = [t for t in res.tests if t.significant]
    for t in sig:
        lines.append(f"  {t.a} > {t.b}: {100 * t.diff:+.2f} points (p {t.p:.2g}, Holm {t.p_holm:.2g})")
    if not sig:
        lines.append("  none")
    rest = [t for t in res.tests if not t.significant]
    if rest:
        untestable = [t for t in rest if math.isnan(t.p)]
        within = [t for t in rest if not math.isnan(t.p)]
        if within:
            lines.append("Within the seed spread: " + "; ".join(
                f"{t.a} vs {t.b} {100 * t.diff:+.2f} (Holm p {t.p_holm:.2g})" for t in within))
        if untestable:
            lines.append("Not testable (fewer than two seeds): " + ", ".join(f"{t.a} vs {t.b}" for t in untestable))
    lines.append(f"study {res.study} in {res.storage}")
    return "\n".join(lines)


def write_html(res: CompareResult, path: str | Path) -> Path:
    """Accuracy (mean, ± one standard deviation over seeds, and each seed) against MACs, params
    and latency, one colour per mixer; one self-contained HTML file (plotly.js inlined)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    axes = [("MACs per image", lambda s: s.model.flops), ("parameters", lambda s: s.model.params)]
    if any(s.latency_ms is not None for s in res.summaries):
        axes.append((f"latency (ms, {res.config.latency_device}, batch {res.config.latency_batch})",
                     lambda s: s.latency_ms))
    fig = make_subplots(rows=1, cols=len(axes), shared_yaxes=True, subplot_titles=[a for a, _ in axes])
    palette = qualitative.Plotly
    for i, s in enumerate(res.summaries):
        colour = palette[i % len(palette)]
        for col, (_, x_of) in enumerate(axes, start=1):
            x = x_of(s)
            if x is None or not s.accuracies:
                continue
            fig.add_trace(go.Scatter(
                x=[x], y=[s.mean], mode="markers", name=s.mixer, legendgroup=s.mixer, showlegend=col == 1,
                marker=dict(size=12, color=colour), error_y=dict(type="data", array=[s.std or 0.0], visible=True),
                hovertext=[f"{s.mixer}: {s.mean:.4f} ± {s.std or 0:.4f} over {len(s.accuracies)} seeds"],
                hoverinfo="text"), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=[x] * len(s.accuracies), y=s.accuracies, mode="markers", legendgroup=s.mixer, showlegend=False,
                marker=dict(size=6, color=colour, opacity=0.45, symbol="circle-open"),
                hovertext=[f"{s.mixer} seed {seed}: {a:.4f}" for seed, a in zip(res.config.seeds, s.accuracies)],
                hoverinfo="text"), row=1, col=col)
    sig = [f"{t.a} > {t.b} (Holm p {t.p_holm:.2g})" for t in res.tests if t.significant]
    fig.update_layout(
        title=f"nas compare: {res.skeleton}, budget {res.budget:,} MACs ±{res.config.tolerance:.0%}; "
              f"beyond seed spread: {', '.join(sig) or 'none'}",
        yaxis=dict(title="validation accuracy (mean ± std over seeds)"), template="plotly_white")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(p), include_plotlyjs=True, full_html=True)
    return p
