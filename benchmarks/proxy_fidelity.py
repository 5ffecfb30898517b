"""How well do cheap estimates rank architectures? Proxy training and zero-cost proxies vs. a
5x longer training run.

``--n`` architectures (default 20) are sampled with a fixed seed from the quickstart study's
search space (``studies/quickstart.toml`` through ``nas.space.SearchSpace.sample``; only
candidates inside the study's FLOP/parameter constraints, as the search would train them) on
its dataset and resolution (digits, 16 px). Each is trained from the same initial weights
with the study's proxy recipe (its ``[evaluator]`` epochs, batch, lr, weight decay) and with a
recipe 5x longer (same everything, 5x the epochs); the short recipe is also repeated with a
second seed, which bounds how well *any* estimator could agree with a noisy short run. The
zero-cost proxies score the initial weights on one batch of 64 training images.

Reported per estimator: Kendall tau and Spearman rho (scipy.stats) against the long run's
final validation accuracy, with p-values.

    python benchmarks/proxy_fidelity.py [--quick] [--out FILE] [--n 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

STUDY = ROOT / "studies" / "quickstart.toml"
ZC = ("naswot", "synflow", "grad_norm", "snip", "flops", "params")


def fallback_sample(rng: random.Random, img: int, num_classes: int):
    """Used only when ``nas.space`` is unavailable: stem patch 2/4 (patchify or conv), 1-2 stages
    (dims 16-64, depth 1-3), one of the core mixers per stage (attention, window, sepconv,
    pool), sincos/cpe/none positions, MLP ratio 2 or 4."""
    from search_space.genome import ArchSpec, StageSpec, StemSpec

    patch = rng.choice([2, 4])
    stem = StemSpec(rng.choice(["patchify", "conv"]), patch)
    side = img // patch
    stages = []
    for i in range(rng.choice([1, 2])):
        if i:
            side //= 2
        dim = rng.choice([16, 32, 48]) * (2 if i else 1)
        mixer = rng.choice(["attention", "window", "sepconv", "pool"])
        knobs: dict[str, Any] = {}
        if mixer in ("attention", "window"):
            knobs["num_heads"] = rng.choice([1, 2])
        if mixer == "window":
            knobs["window_size"] = 2 if side % 4 else rng.choice([2, 4])
        stages.append(StageSpec(depth=rng.choice([1, 2, 3]), dim=dim, mixer=mixer, mixer_knobs=knobs,
                                pos=rng.choice(["none", "sincos", "cpe"]), mlp_ratio=rng.choice([2.0, 4.0]),
                                downsample="none" if i == 0 else "conv"))
    return ArchSpec(stem=stem, stages=tuple(stages), num_classes=num_classes, img_size=img).validate()


def sample_architectures(n: int, seed: int) -> tuple[list[Any], dict[str, Any], str]:
    """``n`` distinct genomes within the study's constraints, plus the study's recipe and the sampler used."""

    from evaluators.proxy import forward_macs
    from search_space import build_model

    recipe = {"epochs": 3, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "img_size": 16,
              "max_flops": 8_000_000, "max_params": 500_000}
    try:
        from nas.space import SearchSpace
        from nas.study import load_study

        study = load_study(STUDY)
        ev = study.evaluator
        recipe.update(epochs=ev.epochs, batch_size=ev.batch_size, lr=ev.lr, weight_decay=ev.weight_decay,
                      img_size=study.data.img_size, max_flops=study.constraints.max_flops,
                      max_params=study.constraints.max_params)
        space = SearchSpace(study)
        sample, sampler = space.sample, f"nas.space.SearchSpace({STUDY.name}).sample"
    except ImportError:
        sample, sampler = (lambda r: fallback_sample(r, recipe["img_size"], 10)), "fallback_sample"
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        try:
            g = sample(rng)
        except ValueError:
            continue
        if g.arch_id in seen:
            continue
        m = build_model(g)
        macs = forward_macs(m, g.in_chans, g.img_size) or 0
        n_params = sum(p.numel() for p in m.parameters())
        if (recipe["max_flops"] and macs > recipe["max_flops"]) or (recipe["max_params"] and n_params > recipe["max_params"]):
            continue
        seen.add(g.arch_id)
        out.append(g)
    return out, recipe, sampler


# --- one architecture (runs in a worker process) --------------------------------------------
_DATA = None


def _init_worker(img_size: int, subset: int | None, threads: int) -> None:
    global _DATA
    import torch

    from evaluators.data import DataSpec, load_dataset

    torch.set_num_threads(threads)
    _DATA = load_dataset(DataSpec("digits", img_size=img_size, subset=subset, seed=0))


def evaluate(task: tuple[int, str, dict[str, Any]]) -> dict[str, Any]:
    import torch

    from evaluators import zero_cost
    from evaluators.proxy import ProxyConfig, ProxyTrainer, forward_macs
    from search_space import ArchSpec, build_model

    i, genome, r = task
    spec = ArchSpec.from_json(genome)
    t0 = time.perf_counter()
    torch.manual_seed(1000 + i)
    init = build_model(spec).state_dict()

    def fresh():
        m = build_model(spec)
        m.load_state_dict(init)
        return m

    macs = forward_macs(fresh(), spec.in_chans, spec.img_size)
    x, y = _DATA.batch(64, seed=0)
    zc = zero_cost.zero_cost_scores(fresh(), x, y, proxies=ZC)
    base = dict(batch_size=r["batch_size"], lr=r["lr"], weight_decay=r["weight_decay"], device="cpu", count_flops=False)
    short = ProxyTrainer(ProxyConfig(epochs=r["epochs"], seed=0, **base)).fit(fresh(), _DATA, flops_per_image=macs)
    short2 = ProxyTrainer(ProxyConfig(epochs=r["epochs"], seed=1, **base)).fit(fresh(), _DATA, flops_per_image=macs)
    long = ProxyTrainer(ProxyConfig(epochs=r["long_epochs"], seed=0, **base)).fit(fresh(), _DATA, flops_per_image=macs)
    return {
        "index": i, "arch_id": spec.arch_id, "summary": spec.summary(), "genome": genome,
        "macs": macs, "params": zc["params"], "zero_cost": zc,
        "short_acc": short.accuracy, "short_best": short.best_accuracy, "short_status": short.status,
        "short_seed1_acc": short2.accuracy, "short_loss": short.loss, "long_loss": long.loss,
        "long_acc": long.accuracy, "long_best": long.best_accuracy, "long_status": long.status,
        "long_curve": long.accuracy_per_epoch, "short_curve": short.accuracy_per_epoch,
        "short_time_s": short.wall_time_s, "long_time_s": long.wall_time_s,
        "seconds": time.perf_counter() - t0,
    }


def correlations(rows: list[dict[str, Any]], target: str = "long_acc") -> list[dict[str, Any]]:
    """Kendall tau / Spearman rho of every estimator against ``target`` (``long_acc``, or
    ``neg_long_loss``: minus the long run's validation loss, which has no ties)."""
    import math

    from scipy.stats import kendalltau, spearmanr

    if target == "long_acc":
        truth = [r["long_acc"] for r in rows]
    else:
        truth = [-r["long_loss"] if r["long_loss"] is not None else None for r in rows]
    estimators = {"short training (proxy recipe)": [r["short_acc"] for r in rows],
                  "short training, other seed": [r["short_seed1_acc"] for r in rows],
                  "short training, -val loss": [-r["short_loss"] if r["short_loss"] is not None else None
                                                for r in rows]}
    for name in ZC:
        estimators[name] = [r["zero_cost"][name] for r in rows]
    out = []
    for name, est in estimators.items():
        pairs = [(e, t) for e, t in zip(est, truth, strict=True)
                 if e is not None and t is not None and math.isfinite(e) and math.isfinite(t)]
        es, ts = [p[0] for p in pairs], [p[1] for p in pairs]
        tau, p_tau = kendalltau(es, ts)
        rho, p_rho = spearmanr(es, ts)
        out.append({"target": target, "estimator": name, "kendall_tau": float(tau), "kendall_p": float(p_tau),
                    "spearman_rho": float(rho), "spearman_p": float(p_rho), "n": len(pairs)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 architectures, 300-image subset, 1 vs 5 epochs (< 2 min)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/proxy_fidelity.json"))
    ap.add_argument("--n", type=int, default=None, help="architectures (default 20; quick 6)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--workers", type=int, default=2, help="processes (one torch thread each)")
    ap.add_argument("--long-factor", type=int, default=5)
    args = ap.parse_args(argv)

    import torch

    from benchmarks._common import machine_info, write_json

    torch.set_num_threads(1)
    n = args.n or (6 if args.quick else 20)
    t0 = time.perf_counter()
    archs, recipe, sampler = sample_architectures(n, args.seed)
    if args.quick:
        recipe["epochs"] = 1
    recipe["long_epochs"] = recipe["epochs"] * args.long_factor
    subset = 300 if args.quick else None
    tasks = [(i, g.to_json(), recipe) for i, g in enumerate(archs)]
    print(f"{n} architectures from {sampler}; digits @{recipe['img_size']}px"
          f"{f', subset {subset}' if subset else ''}; short {recipe['epochs']} epochs vs long "
          f"{recipe['long_epochs']} (batch {recipe['batch_size']}, lr {recipe['lr']}); {args.workers} workers", flush=True)
    rows = []
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers, initializer=_init_worker,
                                          initargs=(recipe["img_size"], subset, 1)) as pool:
            for r in pool.imap_unordered(evaluate, tasks):
                rows.append(r)
                print(f"  [{len(rows):2d}/{n}] {r['summary'][:60]:<60} short {r['short_acc']:.3f} "
                      f"long {r['long_acc']:.3f}  ({r['seconds']:.0f}s)", flush=True)
    else:
        _init_worker(recipe["img_size"], subset, 1)
        for t in tasks:
            r = evaluate(t)
            rows.append(r)
            print(f"  [{len(rows):2d}/{n}] {r['summary'][:60]:<60} short {r['short_acc']:.3f} "
                  f"long {r['long_acc']:.3f}  ({r['seconds']:.0f}s)", flush=True)
    rows.sort(key=lambda r: r["index"])
    corr = correlations(rows, "long_acc")
    corr_loss = correlations(rows, "neg_long_loss")
    wall = time.perf_counter() - t0
    print(f"\n{'estimator':<32}{'vs long-run accuracy':^36}{'vs long-run -val loss':^36}")
    print(f"{'':<32}" + f"{'Kendall tau':>12}{'p':>7}{'Spearman':>10}{'p':>7}" * 2)
    for c, d in zip(corr, corr_loss, strict=True):
        print(f"{c['estimator']:<32}{c['kendall_tau']:>12.3f}{c['kendall_p']:>7.3f}"
              f"{c['spearman_rho']:>10.3f}{c['spearman_p']:>7.3f}"
              f"{d['kendall_tau']:>12.3f}{d['kendall_p']:>7.3f}{d['spearman_rho']:>10.3f}{d['spearman_p']:>7.3f}")
    accs = [r["long_acc"] for r in rows]
    print(f"long-run accuracy range {min(accs):.3f}-{max(accs):.3f}; wall {wall / 60:.1f} min")
    by = {c["estimator"]: c for c in corr}
    by_loss = {c["estimator"]: c for c in corr_loss}
    zc_best = max(ZC[:4], key=lambda k: by[k]["kendall_tau"])
    summary = {
        "n_architectures": n,
        "kendall_tau_short_training": by["short training (proxy recipe)"]["kendall_tau"],
        "spearman_rho_short_training": by["short training (proxy recipe)"]["spearman_rho"],
        "kendall_tau_short_vs_long_other_seed": by["short training, other seed"]["kendall_tau"],
        **{f"kendall_tau_{k}": by[k]["kendall_tau"] for k in ZC},
        "best_zero_cost_proxy": zc_best,
        "kendall_tau_short_training_vs_long_loss": by_loss["short training (proxy recipe)"]["kendall_tau"],
        **{f"kendall_tau_{k}_vs_long_loss": by_loss[k]["kendall_tau"] for k in ZC},
        "long_acc_ties": len(accs) - len(set(accs)),
        "long_acc_min": min(accs), "long_acc_max": max(accs),
        "wall_min": wall / 60,
    }
    path = write_json(args.out, summary, rows, machine=machine_info("cpu"), correlations=corr + corr_loss,
                      settings={"sampler": sampler, "seed": args.seed, "recipe": recipe, "subset": subset,
                                "workers": args.workers, "quick": args.quick, "dataset": "digits"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
