"""The Ray Tune backend on a real local two-node Ray cluster (``ray.cluster_utils.Cluster``):
trials land in the same SQLite study store as the Optuna backend's, ASHA's early-stopped trials
are PRUNED with their epoch count (as the Optuna backend's pruned trials) and stay off the front,
and both nodes run trials."""

from __future__ import annotations

import dataclasses

import pytest

from nas import attrs
from nas.front import load_trials, pareto_front
from nas.study import parse_study
from nas.testing import tiny_study_text


@pytest.mark.slow
def test_ray_two_nodes_same_store_and_asha(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from nas.backends import optuna_backend, ray_backend
    from nas.commands.search import prepare

    url = f"sqlite:///{tmp_path / 'ray.db'}"
    text = tiny_study_text("raytest", url, trials=6, kind="proxy", epochs=3, max_flops="50M", sampler="tpe")
    text = text.replace("batch_size = 32", 'batch_size = 32\nfidelity = { pruner = "asha", min_epochs = 1, reduction_factor = 2 }')
    spec = parse_study(text)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        spec = spec.replace(backend="ray", ray=dataclasses.replace(spec.ray, address=cluster.address, cpus_per_trial=1))
        prepare(spec, heartbeat_s=None)
        result = ray_backend.run(spec, target=6, show_progress=False)
        assert result.done == 6 and not result.interrupted
    finally:
        ray.shutdown()
        cluster.shutdown()

    recs = load_trials(url, "raytest")
    assert len(recs) == 6
    for r in recs:
        assert r.state in ("COMPLETE", "PRUNED", "FAIL"), r
        assert r.genome and r.arch_id and r.flops and attrs.CODE_VERSION in r.user_attrs
        if r.state == "FAIL":
            assert r.failure
        elif r.state == "PRUNED" and r.reused_from is None:  # stopped by ASHA, as Optuna records a pruned trial
            assert 1 <= r.epochs < r.epoch_budget == 3 and r.failure.startswith("pruned: stopped by ASHA")
            assert len(r.accuracy_per_epoch) == r.epochs and r.accuracy == r.accuracy_per_epoch[-1]
        elif r.feasible and r.reused_from is None:
            assert r.epoch_budget == 3 and 1 <= r.epochs <= 3
            assert len(r.accuracy_per_epoch) == r.epochs and r.accuracy == r.accuracy_per_epoch[-1]
            assert r.user_attrs[attrs.WORKER].startswith("ray:")
    nodes = {r.user_attrs[attrs.WORKER].split(":")[2] for r in recs
             if r.user_attrs.get(attrs.WORKER, "").startswith("ray:")}
    assert len(nodes) == 2, nodes  # both nodes of the cluster ran trials
    front = pareto_front(recs, ["accuracy", "flops"])
    assert front and all(r.full_budget for r in front)  # ASHA-stopped trials never on the front

    # the Optuna backend continues the very same study in the same store
    optuna_backend.run_worker(spec.replace(backend="optuna"), target=8)
    after = load_trials(url, "raytest")
    assert len(after) >= 8 and {r.number for r in recs} <= {r.number for r in after}


@pytest.mark.slow
def test_ray_search_output_is_clean_on_success(tmp_path):
    """``nas search`` on a local Ray cluster prints the front and nothing that looks like an
    error (#19.1): no ``Could not fetch metrics`` per trial (Ray Tune's results files), no
    token-authentication warning, no traceback."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 'quiet.db'}"
    text = tiny_study_text("rayquiet", url, trials=3, kind="synthetic", max_flops="50M", sampler="random")
    text = text.replace('[study]\n', '[study]\nbackend = "ray"\n', 1)
    (tmp_path / "quiet.toml").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(tmp_path / "quiet.toml"), "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    (root / "tests" / "artifacts").mkdir(parents=True, exist_ok=True)
    (root / "tests" / "artifacts" / "ray_search.txt").write_text(out)  # the transcript, for a look
    assert proc.returncode == 0, out
    assert "Pareto front (" in out and "hypervolume:" in out, out
    noisy = [ln for ln in out.splitlines()
             if re.search(r"Error|Traceback|FileNotFoundError|Could not fetch|Failed to fetch|Token authentication", ln)]
    assert not noisy, "\n".join(noisy)
