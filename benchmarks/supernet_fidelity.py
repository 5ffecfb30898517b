"""How well does a weight-sharing supernet rank architectures, and at what cost per candidate?

The architectures and the reference are ``benchmarks/proxy_fidelity.py``'s: its stored rows in
``benchmarks/results/proxy_fidelity.json`` (genomes sampled from ``studies/quickstart.toml``'s
space within its constraints, trained stand-alone with the study's proxy recipe for 5x its
epochs: ``long_acc``) when they exist for the same dataset and recipe; otherwise they are computed
here with that script's own ``sample_architectures``/``evaluate``. Beside the supernet, the same
rows give short proxy training's and the zero-cost proxies' Kendall tau against that reference.

The supernet (``evaluators.supernet``) is built for the quickstart study's space and trained once
with the proxy recipe, one path or a few per step (``--strategies``: each is trained for the same
number of paths and reported); each architecture is then scored by its validation accuracy with
inherited weights (BatchNorm recalibrated for conv-stem paths), and also after a short
fine-tune (``--finetune-steps``).

Cost per candidate, amortised over ``--candidates`` (1,000) candidates: supernet training / N +
the median scoring time, against short proxy training's median wall time, measured in this run on
``--short-archs`` of the architectures (same machine, same load).

    python benchmarks/supernet_fidelity.py [--quick] [--out FILE] [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

REFERENCE = ROOT / "benchmarks" / "results" / "proxy_fidelity.json"


def study_recipe() -> dict[str, Any]:
    """The quickstart study's proxy recipe and constraints, keyed as ``proxy_fidelity`` stores them."""
    from benchmarks.proxy_fidelity import STUDY
    from nas.study import load_study

    study = load_study(STUDY)
    ev = study.evaluator
    return {"epochs": ev.epochs, "batch_size": ev.batch_size, "lr": ev.lr, "weight_decay": ev.weight_decay,
            "img_size": study.data.img_size, "max_flops": study.constraints.max_flops,
            "max_params": study.constraints.max_params}


def reference_rows(n: int) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """``proxy_fidelity``'s rows (genome, long_acc, short_acc, zero-cost scores) for ``n`` archs:
    its stored full run when that used the study's recipe (its first ``n`` rows are the first
    ``n`` architectures of its seeded sampling), else computed here with its own code."""
    from benchmarks import proxy_fidelity as pf

    recipe = study_recipe()
    if REFERENCE.exists():
        stored = json.loads(REFERENCE.read_text())
        st = stored["settings"]
        same = (st.get("dataset") == "digits" and not st.get("quick") and st.get("subset") is None
                and st.get("seed") == 0 and all(st["recipe"].get(k) == v for k, v in recipe.items()))
        rows = sorted(stored["rows"], key=lambda r: r["index"])
        if same and len(rows) >= n:
            return rows[:n], st["recipe"], f"stored {REFERENCE.name}"
    archs, recipe, _ = pf.sample_architectures(n, 0)
    recipe["long_epochs"] = recipe["epochs"] * 5
    pf._init_worker(recipe["img_size"], None, 1)
    return [pf.evaluate((i, a.to_json(), recipe)) for i, a in enumerate(archs)], recipe, "computed in this run"


def kendall(est: list[float], truth: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(est, truth)[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 architectures, 150 supernet steps (< 2 min)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/supernet_fidelity.json"))
    ap.add_argument("--n", type=int, default=None, help="architectures (default 20; quick 8)")
    ap.add_argument("--steps", type=int, default=None, help="supernet paths trained (default 1500; quick 150)")
    ap.add_argument("--strategies", default=None,
                    help="comma list of uniform:PATHS or sandwich:PATHS (default uniform:1,sandwich:2; quick uniform:1)")
    ap.add_argument("--finetune-steps", type=int, default=None, help="fine-tune steps before scoring (default 20; quick 5)")
    ap.add_argument("--short-archs", type=int, default=None, help="architectures short-trained here for timing (5; quick 1)")
    ap.add_argument("--candidates", type=int, default=1000, help="candidates the supernet cost is amortised over")
    args = ap.parse_args(argv)

    import torch

    from benchmarks._common import machine_info, write_json
    from benchmarks.proxy_fidelity import STUDY, correlations
    from evaluators.data import DataSpec, load_dataset
    from evaluators.proxy import ProxyConfig, ProxyTrainer
    from evaluators.supernet import SupernetTrainer, WeightBank, score_path
    from nas.space import SearchSpace
    from nas.study import load_study
    from nas.supernet import sampler_for, supernet_space, within_params
    from search_space import ArchSpec, build_model

    torch.set_num_threads(1)
    t_all = time.perf_counter()
    n = args.n or (8 if args.quick else 20)
    paths_total = args.steps or (150 if args.quick else 1500)
    strategies = (args.strategies or ("uniform:1" if args.quick else "uniform:1,sandwich:2")).split(",")
    ft_steps = args.finetune_steps if args.finetune_steps is not None else (5 if args.quick else 20)
    n_short = args.short_archs or (1 if args.quick else 5)

    rows, recipe, source = reference_rows(n)
    study = load_study(STUDY)
    space = SearchSpace(study)
    data = load_dataset(DataSpec("digits", img_size=recipe["img_size"], seed=0))
    cfg = ProxyConfig(epochs=recipe["epochs"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                      weight_decay=recipe["weight_decay"], device="cpu", count_flops=False)
    specs = [ArchSpec.from_json(r["genome"]) for r in rows]
    truth = [r["long_acc"] for r in rows]
    print(f"{n} architectures ({source}); digits @{recipe['img_size']}px; supernet {paths_total} paths per "
          f"strategy: {', '.join(strategies)}", flush=True)

    # short proxy training, timed in this run (the cost baseline)
    short_s = []
    for spec in specs[:n_short]:
        torch.manual_seed(0)
        res = ProxyTrainer(cfg).fit(build_model(spec), data)
        short_s.append(res.wall_time_s)
    short_median = statistics.median(short_s)
    print(f"short proxy training: median {short_median:.1f}s per candidate ({len(short_s)} archs)", flush=True)

    results = []
    for strat in strategies:
        name, k = strat.split(":")
        k = int(k)
        bank = WeightBank(supernet_space(space))
        sampler = sampler_for(space, within_params(bank, study.constraints.max_params))
        with tempfile.TemporaryDirectory() as tmp:
            trainer = SupernetTrainer(cfg, steps=max(1, paths_total // k), paths_per_step=k, strategy=name,
                                      checkpoint=Path(tmp) / "supernet.pt", checkpoint_every=10_000,
                                      progress=not args.quick, seed=0)
            tr = trainer.fit(bank, data, sampler)
        inherited, finetuned, score_s, ft_s = [], [], [], []
        for spec in specs:
            sc, _ = score_path(bank, spec, data, cfg)
            inherited.append(sc.accuracy)
            score_s.append(sc.seconds)
            if ft_steps:
                sc2, _ = score_path(bank, spec, data, cfg, finetune_steps=ft_steps)
                finetuned.append(sc2.accuracy)
                ft_s.append(sc2.seconds)
        per_cand = tr.total_train_time_s / args.candidates + statistics.median(score_s)
        per_cand_ft = tr.total_train_time_s / args.candidates + statistics.median(ft_s) if ft_s else None
        r = {"strategy": name, "paths_per_step": k, "steps": tr.steps, "paths": tr.paths,
             "train_time_s": tr.total_train_time_s, "final_loss": tr.final_loss,
             "loss_per_epoch": tr.loss_per_epoch,
             "kendall_tau": kendall(inherited, truth),
             "kendall_tau_finetuned": kendall(finetuned, truth) if finetuned else None,
             "score_s_median": statistics.median(score_s),
             "finetune_score_s_median": statistics.median(ft_s) if ft_s else None,
             "cost_per_candidate_s": per_cand, "cost_per_candidate_finetuned_s": per_cand_ft,
             "cost_ratio_vs_short_training": short_median / per_cand,
             "cost_ratio_finetuned_vs_short_training": short_median / per_cand_ft if per_cand_ft else None,
             "inherited_acc": inherited, "finetuned_acc": finetuned}
        results.append(r)
        print(f"  {name}:{k}: {tr.paths} paths in {tr.total_train_time_s:.0f}s; tau inherited "
              f"{r['kendall_tau']:.3f}, fine-tuned {r['kendall_tau_finetuned'] if finetuned else float('nan'):.3f}; "
              f"{per_cand:.2f}s/candidate -> ratio {r['cost_ratio_vs_short_training']:.1f}", flush=True)

    corr = {c["estimator"]: c["kendall_tau"] for c in correlations(rows, "long_acc")}
    first = results[0]  # the study default (uniform, one path per step) is listed first
    summary = {
        "n_architectures": n,
        "reference": source,
        "kendall_tau": first["kendall_tau"],
        "kendall_tau_finetuned": first["kendall_tau_finetuned"],
        "kendall_tau_short_training": corr["short training (proxy recipe)"],
        **{f"kendall_tau_{k}": corr[k] for k in ("synflow", "snip", "grad_norm", "naswot", "params", "flops")},
        "cost_ratio_vs_short_training": first["cost_ratio_vs_short_training"],
        "cost_ratio_finetuned_vs_short_training": first["cost_ratio_finetuned_vs_short_training"],
        "supernet_train_s": first["train_time_s"],
        "score_s_median": first["score_s_median"],
        "short_training_s_median": short_median,
        "strategies": {f"{r['strategy']}:{r['paths_per_step']}": {k: r[k] for k in (
            "kendall_tau", "kendall_tau_finetuned", "cost_ratio_vs_short_training", "train_time_s")}
            for r in results},
        "goal_kendall_tau_met": first["kendall_tau"] >= 0.6,
        "goal_cost_ratio_met": first["cost_ratio_vs_short_training"] >= 10,
        "wall_min": (time.perf_counter() - t_all) / 60,
    }
    print(json.dumps(summary, indent=1))
    per_arch = [{"arch_id": s.arch_id, "summary": s.summary(), "long_acc": t,
                 **{f"{r['strategy']}:{r['paths_per_step']}": {"inherited": r["inherited_acc"][i],
                                                               "finetuned": (r["finetuned_acc"] or [None] * n)[i]}
                    for r in results}}
                for i, (s, t) in enumerate(zip(specs, truth, strict=True))]
    path = write_json(args.out, summary, per_arch, machine=machine_info("cpu"), strategies=results,
                      settings={"recipe": recipe, "paths": paths_total, "strategies": strategies,
                                "finetune_steps": ft_steps, "short_archs": n_short, "candidates": args.candidates,
                                "quick": args.quick, "study": str(STUDY.relative_to(ROOT))})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
