"""Pareto front and hypervolume on plain records; `nas front --with-presets` on a real store."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from nas.cli import main
from nas.front import TrialRecord, eligible, hypervolume, hypervolume_points, pareto_front
from nas.testing import make_tiny_study

OBJ = [("accuracy", "maximize"), ("flops", "minimize")]


def rec(n, acc, flops, **kw) -> TrialRecord:
    return TrialRecord(number=n, state=kw.pop("state", "COMPLETE"), values={"accuracy": acc, "flops": flops},
                       arch_id=kw.pop("arch_id", f"a{n}"), accuracy=acc, flops=flops, **kw)


def test_front_keeps_only_complete_feasible_full_budget_nondominated_once_per_genome():
    recs = [
        rec(0, 0.90, 4e6),
        rec(1, 0.80, 1e6),
        rec(2, 0.70, 2e6),                                   # dominated by 1
        rec(3, 0.95, 9e6, feasible=False),                   # over budget
        rec(4, 0.99, 1e5, epochs=1, epoch_budget=5),         # stopped early (ASHA/pruned)
        rec(5, 0.99, 1e5, state="FAIL"),
        rec(6, 0.90, 4e6, arch_id="a0", reused_from=0),      # the same genome again
        rec(7, 0.60, 5e5),
    ]
    front = pareto_front(recs, OBJ)
    assert [r.number for r in front] == [0, 1, 7]            # best accuracy first
    assert {r.number for r in eligible(recs, OBJ)} == {0, 1, 2, 7}
    assert pareto_front(recs, ["accuracy", "flops"]) == front  # directions from the names


def test_hypervolume_2d_by_hand():
    recs = [rec(0, 0.9, 4.0), rec(1, 0.8, 1.0), rec(2, 0.5, 6.0)]
    # minimisation: (-0.9, 4), (-0.8, 1) dominate; ref (0, 10): 0.8*9 + 0.1*6 = 7.8
    assert hypervolume(recs, OBJ, [0.0, 10.0]) == pytest.approx(7.8)
    assert hypervolume(recs, OBJ, [0.0, 10.0], normalize=True) == pytest.approx(0.78)
    assert hypervolume([], OBJ, [0.0, 10.0]) == 0.0
    assert hypervolume(recs, OBJ, [0.95, 10.0]) == 0.0      # nothing beats the reference


def _mc_hv(points, ref, n=40000, seed=0):
    rng = random.Random(seed)
    hit = 0
    for _ in range(n):
        x = [rng.uniform(0, r) for r in ref]
        hit += any(all(p[i] <= x[i] for i in range(len(ref))) for p in points)
    return hit / n * float(__import__("math").prod(ref))


def test_hypervolume_3d_matches_inclusion_exclusion_and_monte_carlo():
    rng = random.Random(1)
    pts = [tuple(rng.uniform(0, 1) for _ in range(3)) for _ in range(6)]
    ref = (1.0, 1.0, 1.0)
    # exact by inclusion-exclusion over the boxes each point dominates
    exact = 0.0
    for k in range(1, len(pts) + 1):
        for sub in itertools.combinations(pts, k):
            corner = [max(p[i] for p in sub) for i in range(3)]
            exact += (-1) ** (k + 1) * float(__import__("math").prod(ref[i] - corner[i] for i in range(3)))
    assert hypervolume_points(pts, ref) == pytest.approx(exact, rel=1e-9)
    assert hypervolume_points(pts, ref) == pytest.approx(_mc_hv(pts, ref), abs=0.02)


def test_front_with_presets_on_a_real_store(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    make_tiny_study(url, "fr", trials=6)
    assert main(["front", "fr", "--storage", url, "--with-presets", "--html", str(tmp_path / "f.html")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "hypervolume" in out and "deit_tiny" in out and "accuracy" in out
    assert (tmp_path / "f.html").stat().st_size > 1_000_000
    from nas import attrs
    from nas.front import load_study_attrs

    presets = load_study_attrs(url, "fr")[attrs.STUDY_PRESETS]
    assert 0.0 < presets["deit_tiny"]["accuracy"] <= 1.0 and presets["deit_tiny"]["flops"] > 0
    assert re.search(r"deit_tiny \S+ FLOPs, \S+ params, accuracy [01]\.\d+", out)
    assert main(["front", "fr", "--storage", url, "--json", "--reference", "accuracy=0,flops=2M"]) == 0
    members = json.loads(capsys.readouterr().out)
    assert members and all(m["flops"] <= 2_000_000 for m in members)
