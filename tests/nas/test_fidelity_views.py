"""What ``nas front`` and the dashboard show of an MO-ASHA study (``nas.fidelity``): candidates
waiting at rungs, the epochs trained, the hypervolume over training compute; and that a study
without MO-ASHA shows none of it."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from datetime import datetime, timedelta

import optuna
import pytest

from nas import attrs as A
from nas import front as F
from nas.cli import main
from nas.dashboard import data as D
from nas.fidelity import cumulative_compute, trained_epochs, waiting
from nas.store import open_storage
from nas.testing import tiny_study_text
from tests.nas.test_fidelity import asha_text, run_study

BUDGET = 9


@pytest.fixture(scope="module")
def asha(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('asha') / 's.db'}"
    return run_study(asha_text("asha", url, 30, epochs=BUDGET), 30)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('plain') / 'p.db'}"
    return run_study(tiny_study_text("plain", url, trials=10, kind="synthetic", epochs=BUDGET, sampler="evolution"), 10)


def _cli(*args: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(list(args)) == 0
    return buf.getvalue()


# --- the data ------------------------------------------------------------------------------------
def _rec(n: int, epochs: int, *, start: int = 0, paused: int | None = None, resumes: int | None = None,
         reused: int | None = None, state: str = "COMPLETE") -> F.TrialRecord:
    ua = {A.START_EPOCH: start, A.EPOCHS: epochs, A.EPOCH_BUDGET: BUDGET}
    if paused is not None:
        ua[A.PAUSED_AT] = paused
    if resumes is not None:
        ua[A.RESUMES] = resumes
    if reused is not None:
        ua[A.REUSED_FROM] = reused
    done = (datetime(2026, 1, 1) + timedelta(seconds=n)).isoformat() if state != "RUNNING" else None
    return F.TrialRecord(number=n, state=state, values={"accuracy": 0.1 * n, "flops": 100.0 - n}, epochs=epochs,
                         epoch_budget=BUDGET, arch_id=f"a{n}", datetime_complete=done, user_attrs=ua)


def test_fidelity_summary_by_hand():
    recs = [
        _rec(0, 1, paused=1),               # waits at 1 ... continued by 3
        _rec(1, 1, paused=1),               # waits at 1
        _rec(2, 3, paused=3),               # promoted in place at 1, waits at 3
        _rec(3, 3, start=1, paused=3, resumes=0),  # 2 more epochs, waits at 3
        _rec(4, 9, start=3, resumes=2),     # 6 more epochs: full budget
        _rec(5, 9, reused=4),               # a reused result: nothing trained
        _rec(6, 0, state="RUNNING"),        # not finished: not counted
    ]
    assert F.waiting_trials(recs) == {1: 1, 3: 3}
    fid = F.fidelity_summary(recs)
    assert fid is not None
    assert fid.waiting == {1: 1, 3: 1}
    assert fid.epochs_trained == 1 + 1 + 3 + 2 + 6 + 0 == 13
    assert (fid.trials, fid.candidates, fid.budget) == (6, 3, BUDGET)
    assert fid.full_budget_epochs == 3 * BUDGET
    assert fid.to_json() == {"waiting": {"1": 1, "3": 1}, "epochs_trained": 13, "full_budget_epochs": 27,
                             "epoch_budget": BUDGET}
    plain = [F.TrialRecord(number=0, state="COMPLETE", values={"accuracy": 0.5}, epochs=BUDGET, epoch_budget=BUDGET,
                           user_attrs={A.EPOCHS: BUDGET})]
    assert F.fidelity_summary(plain) is None and F.waiting_trials(plain) == {}


def test_fidelity_summary_on_a_study(asha):
    recs = F.load_trials(asha.storage, asha.name)
    trials = optuna.load_study(study_name=asha.name, storage=open_storage(asha.storage, heartbeat_s=None)).get_trials()
    fid = F.fidelity_summary(recs)
    assert fid is not None and fid.budget == BUDGET
    assert F.waiting_trials(recs) == waiting(trials)
    assert fid.waiting == dict(sorted(Counter(waiting(trials).values()).items()))
    assert sum(fid.waiting.values()) > 0 and set(fid.waiting) <= {1, 3}
    assert fid.epochs_trained == sum(trained_epochs(t.user_attrs) for t in trials) == cumulative_compute(recs)[-1][1]
    assert fid.candidates == sum(1 for t in trials if A.RESUMES not in t.user_attrs) == 30 - sum(
        1 for t in trials if A.RESUMES in t.user_attrs)
    assert fid.epochs_trained < fid.full_budget_epochs == fid.candidates * BUDGET


# --- nas front -----------------------------------------------------------------------------------
def test_nas_front_text_and_json_of_an_mo_asha_study(asha):
    fid = F.fidelity_summary(F.load_trials(asha.storage, asha.name))
    out = _cli("front", asha.name, "--storage", asha.storage)
    lines = out.splitlines()
    assert any(ln.startswith(f"Pareto front, every member trained the full budget of {BUDGET} epochs (") for ln in lines)
    waits = ", ".join(f"{n} at {rung} epoch{'s' if rung != 1 else ''}" for rung, n in fid.waiting.items())
    assert f"waiting at rungs: {waits} (MO-ASHA; continued when promoted)" in lines
    assert (f"training compute: {fid.epochs_trained} epochs over 30 trials (full budget for all {fid.candidates} "
            f"candidates would be {fid.candidates * BUDGET})") in lines
    members = json.loads(_cli("front", asha.name, "--storage", asha.storage, "--json"))
    assert members and all(m["epochs"] == BUDGET for m in members)
    assert all(m["fidelity"] == {"waiting": {str(k): v for k, v in fid.waiting.items()},
                                 "epochs_trained": fid.epochs_trained,
                                 "full_budget_epochs": fid.candidates * BUDGET, "epoch_budget": BUDGET}
               for m in members)
    waiting_numbers = set(F.waiting_trials(F.load_trials(asha.storage, asha.name)))
    assert not waiting_numbers & {m["trial"] for m in members}


def test_nas_front_of_a_plain_study_says_nothing_of_fidelity(plain):
    out = _cli("front", plain.name, "--storage", plain.storage)
    assert "Pareto front (" in out and "waiting at rungs" not in out and "training compute" not in out
    assert "every member trained" not in out
    members = json.loads(_cli("front", plain.name, "--storage", plain.storage, "--json"))
    assert members and all("fidelity" not in m for m in members)


# --- the dashboard -------------------------------------------------------------------------------
def test_hypervolume_over_compute(asha):
    data = D.load_study_data(D.Store(asha.storage), asha.name)
    hc = D.hypervolume_over_compute(data)
    assert hc is not None
    pts = hc["points"]
    ref = D.reference_point(data)
    assert hc["reference_point"] == ref
    assert [(p["trial"], p["epochs"]) for p in pts] == cumulative_compute(data.records)
    hvs = [p["hypervolume"] for p in pts]
    assert all(a <= b for a, b in zip(hvs, hvs[1:])) and hvs[-1] > 0
    assert hvs[-1] == pytest.approx(F.hypervolume(data.records, data.objectives, ref), rel=1e-12)
    assert pts[-1]["epochs"] == hc["epochs_trained"] < hc["full_budget_epochs"]
    # each point: the hypervolume of the trials finished by then (the front is full-budget only)
    for i in range(0, len(pts), 4):
        done = {p["trial"] for p in pts[: i + 1]}
        prefix = [r for r in data.records if r.number in done]
        assert pts[i]["hypervolume"] == pytest.approx(F.hypervolume(prefix, data.objectives, ref), rel=1e-12)
    # the paused results never count: the same series without them is the same
    paused = [p for p in pts if A.PAUSED_AT in data.record(p["trial"]).user_attrs]
    assert paused and all(p["hypervolume"] == prev["hypervolume"] for prev, p in zip(pts, pts[1:]) if p in paused)


def test_dashboard_draws_waiting_candidates_and_compute(asha):
    from nas.dashboard import figures as FIG
    from nas.dashboard.app import build_views

    data = D.load_study_data(D.Store(asha.storage), asha.name)
    wait = F.waiting_trials(data.records)
    rows = {r["number"]: r for r in data.rows}
    assert {n for n, r in rows.items() if r["category"] == "waiting"} == set(wait)
    for n, rung in wait.items():
        r = rows[n]
        assert r["rung"] == rung == r["epochs"] and r["accuracy"] == data.record(n).values["accuracy"]
    views = build_views(data, "flops", "accuracy", [])
    traces = [t for t in views["pareto"].data if (t.meta or {}).get("category") == "waiting"]
    by_rung = Counter(wait.values())
    assert sorted(t.meta["rung"] for t in traces) == sorted(by_rung)
    for t in traces:
        k = t.meta["rung"]
        assert set(t.customdata) == {n for n, r in wait.items() if r == k} and len(t.x) == by_rung[k]
        assert t.name == f"waiting at a rung ({k} epoch{'s' if k != 1 else ''}; values at the rung) ({by_rung[k]})"
        assert t.marker.color != FIG.CATEGORY_STYLE["front"]["color"] and t.marker.size < FIG.CATEGORY_STYLE[
            "front"]["size"] and t.opacity < 1
        assert [t.y[i] for i in range(len(t.x))] == [rows[n]["accuracy"] for n in t.customdata]
    front_trace = next(t for t in views["pareto"].data if (t.meta or {}).get("category") == "front")
    assert set(front_trace.customdata) == set(data.front) and not set(front_trace.customdata) & set(wait)
    assert all(data.record(n).epochs == BUDGET for n in data.front)
    # the first traces are the waiting ones: everything else is drawn over them
    assert [(t.meta or {}).get("category") for t in views["pareto"].data[: len(traces)]] == ["waiting"] * len(traces)
    fig = views["hv_compute"]
    assert fig is not None and "training compute" in fig.layout.title.text
    hc = D.hypervolume_over_compute(data)
    assert list(fig.data[0].x) == [p["epochs"] for p in hc["points"]]
    assert list(fig.data[0].y) == [p["hypervolume"] for p in hc["points"]]
    assert any(s.x0 == hc["full_budget_epochs"] for s in fig.layout.shapes)
    assert views["hv"] is not None  # the hypervolume over trials stays


def test_dashboard_of_a_plain_study_is_unchanged(plain):
    from nas.dashboard.app import build_views

    data = D.load_study_data(D.Store(plain.storage), plain.name)
    assert data.front and not any(r["category"] == "waiting" or "rung" in r for r in data.rows)
    assert D.hypervolume_over_compute(data) is None
    views = build_views(data, "flops", "accuracy", [])
    assert views["hv_compute"] is None
    assert not any((t.meta or {}).get("category") == "waiting" for t in views["pareto"].data)
    assert not any("waiting" in (t.name or "") for t in views["pareto"].data)


def test_report_and_page_carry_the_compute_figure(asha, plain, tmp_path):
    from nas.dashboard.app import create_app
    from nas.dashboard.report import build_report

    build_report(asha.storage, asha.name, tmp_path / "a.html", references=[], count_references=False, details=0)
    build_report(plain.storage, plain.name, tmp_path / "p.html", references=[], count_references=False, details=0)
    assert "<h2>Hypervolume over training compute</h2>" in (tmp_path / "a.html").read_text()
    assert "Hypervolume over training compute" not in (tmp_path / "p.html").read_text()
    layout = create_app(asha.storage, study=asha.name, count_references=False).server.test_client() \
        .get("/_dash-layout").get_data(as_text=True)
    assert '"hv-compute-box"' in layout and '"hv-compute"' in layout
    # the page's draw callback: the compute figure shown for MO-ASHA, hidden otherwise
    shown = _draw(asha)
    assert shown["hv-compute-box"]["style"] == {}
    assert shown["hv-compute"]["figure"]["layout"]["title"]["text"].startswith("Hypervolume over training compute")
    n_wait = len(F.waiting_trials(F.load_trials(asha.storage, asha.name)))
    assert f"waiting {n_wait};" in shown["status"]["children"]
    assert _draw(plain)["hv-compute-box"]["style"] == {"display": "none"}


def _draw(spec) -> dict:
    """The page's ``draw`` callback's outputs for ``spec``'s study, through Dash's HTTP endpoint."""
    from nas.dashboard.app import create_app

    app = create_app(spec.storage, study=spec.name, count_references=False)
    key = next(k for k in app.callback_map if "hv-compute.figure" in k)
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in key.strip(".").split("...")]
    inputs = [("version", "data", "v"), ("x-axis", "value", "flops"), ("y-axis", "value", "accuracy"),
              ("refs", "value", [])]
    payload = {"output": key, "outputs": outputs, "changedPropIds": ["version.data"],
               "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
               "state": [{"id": "study", "property": "value", "value": spec.name}]}
    got = app.server.test_client().post("/_dash-update-component", json=payload)
    assert got.status_code == 200, got.get_data(as_text=True)[:500]
    return got.get_json()["response"]
