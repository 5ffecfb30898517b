"""The dashboard's data layer on real SQLite stores written through Optuna (nas.attrs format),
the figures built from its records, the report, and the page's safety: read-only, and a
message instead of a traceback for a missing store, an unknown study or an empty one."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import sqlite3

import pytest

from nas import attrs as A
from nas import front as F
from nas.dashboard import data as D
from nas.dashboard.demo import create_demo_study, fast_storage, write_demo_study


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    """Two studies (2 and 3 objectives, with failed and infeasible trials) and an empty one."""
    path = tmp_path_factory.mktemp("dash") / "store.db"
    url = f"sqlite:///{path}"
    st = fast_storage(url)
    write_demo_study(st, "demo", 60, seed=0, fail_every=10, max_flops=3.0e9)
    write_demo_study(st, "tri", 25, seed=1, three_objectives=True)
    create_demo_study(st, "empty")
    st.engine.dispose()
    return url


def _digest(url: str) -> tuple[str, float]:
    path = url[len("sqlite:///"):]
    import os

    return hashlib.sha256(open(path, "rb").read()).hexdigest(), os.stat(path).st_mtime_ns


def test_fast_reader_gives_the_same_records_as_optuna(store_url, tmp_path):
    store = D.Store(store_url)
    info = store.study("demo")
    fast = store.trials(info)
    names = [n for n, _ in info.objectives]
    slow = D.load_trials_optuna(store_url, "demo", names)
    assert len(fast) == len(slow) == 60
    for a, b in zip(fast, slow):
        assert a.to_dict() == b.to_dict()
        assert a.optuna_constraints == b.optuna_constraints
        assert a.optuna_params == b.optuna_params
    # and the same as the search helper's loader (run on a copy: it opens the store for writing)
    copy = tmp_path / "copy.db"
    shutil.copy(store_url[len("sqlite:///"):], copy)
    theirs = F.load_trials(f"sqlite:///{copy}", "demo")
    assert [r.to_dict() for r in theirs] == [r.to_dict() for r in fast]
    # a second read reuses the finished trials
    again = store.trials(info)
    assert all(x is y for x, y in zip(again, fast))


def test_study_header(store_url):
    store = D.Store(store_url)
    assert store.study_names() == ["demo", "tri", "empty"]
    info = store.study("tri")
    assert info.objectives == [("accuracy", "maximize"), ("flops", "minimize"), ("latency_ms", "minimize")]
    assert info.metric_names == ["accuracy", "flops", "latency_ms"]
    assert info.img_size == 224 and info.num_classes == 10
    with pytest.raises(D.StoreError, match="no study 'dem'.*did you mean 'demo'"):
        store.study("dem")


def test_front_membership_and_categories(store_url):
    data = D.load_study_data(D.Store(store_url), "demo")
    objs = data.objectives
    assert data.front == [r.number for r in F.pareto_front(data.records, objs)]
    assert data.front, "the demo study must have a front"
    by_cat: dict[str, list[dict]] = {}
    for row in data.rows:
        by_cat.setdefault(row["category"], []).append(row)
    assert {r["number"] for r in by_cat["front"]} == set(data.front)
    assert len(by_cat["failed"]) == 6  # every 10th trial
    assert all(r["feasible"] == "no" and r["flops"] > 3.0e9 for r in by_cat["infeasible"])
    assert all(r["feasible"] == "yes" for c in ("front", "dominated") for r in by_cat.get(c, []))

    def as_min(r):
        return tuple(-r[n] if d == "maximize" else r[n] for n, d in objs)

    front = [as_min(r) for r in by_cat["front"]]
    for r in by_cat.get("dominated", []):  # each dominated trial is dominated by a front member
        p = as_min(r)
        assert any(all(a <= b for a, b in zip(q, p)) and q != p for q in front)
    for i, p in enumerate(front):           # and no front member dominates another
        assert not any(all(a <= b for a, b in zip(q, p)) and q != p for j, q in enumerate(front) if j != i)


def test_front_for_any_pair_of_axes(store_url):
    data = D.load_study_data(D.Store(store_url), "demo")
    pts = D.front_2d(data.records, "flops", "params")
    assert pts and [p["flops"] for p in pts] == sorted(p["flops"] for p in pts)
    elig = F.eligible(data.records, [("flops", "minimize"), ("params", "minimize")])
    for p in pts:
        assert not any(r.metric("flops") <= p["flops"] and r.metric("params") <= p["params"]
                       and (r.metric("flops"), r.metric("params")) != (p["flops"], p["params"]) for r in elig)
    assert D.front_2d(data.records, "flops", "flops") == []
    for x, y in (("flops", "accuracy"), ("accuracy", "flops"), ("flops", "params")):  # cached / reused: same
        assert D.front_2d(data.records, x, y, study=data) == D.front_2d(data.records, x, y)
    assert {p["number"] for p in D.front_2d(data.records, "flops", "accuracy")} == set(data.front)


def test_hypervolume_history_matches_front_hypervolume(store_url):
    data = D.load_study_data(D.Store(store_url), "demo")
    hv = D.hypervolume_history(data)
    ref = hv["reference_point"]
    assert ref == data.info.user_attrs[A.STUDY_REFERENCE_POINT]
    by_trial = hv["by_trial"]
    assert by_trial and all(a["hypervolume"] <= b["hypervolume"] for a, b in zip(by_trial, by_trial[1:]))
    for point in by_trial[:: max(1, len(by_trial) // 6)] + by_trial[-1:]:
        prefix = [r for r in data.records if r.number <= point["trial"]]
        assert point["hypervolume"] == pytest.approx(F.hypervolume(prefix, data.objectives, ref), rel=1e-9)
    times = [p["elapsed_s"] for p in hv["by_time"]]
    assert times == sorted(times) and times[0] >= 0
    assert hv["by_time"][-1]["hypervolume"] == pytest.approx(by_trial[-1]["hypervolume"])


def test_composition_counts(store_url):
    data = D.load_study_data(D.Store(store_url), "demo")
    comp = D.composition(data)
    done = [r for r in data.records if r.state == "COMPLETE"]
    front = [r for r in done if r.number in set(data.front)]
    for facet in D.COMPOSITION_FACETS:
        rows = [c for c in comp if c["facet"] == facet]
        assert rows
        for c in rows:
            assert 0 <= c["front"] <= c["all"]
    mixers = {c["value"]: c for c in comp if c["facet"] == "mixer"}
    attention = [r for r in done if any(s["mixer"] == "attention" for s in json.loads(r.genome)["stages"])]
    assert mixers["attention"]["all"] == len(attention)
    assert mixers["attention"]["all_share"] == pytest.approx(len(attention) / len(done))
    shapes = {c["value"]: c for c in comp if c["facet"] == "shape"}
    assert sum(c["front"] for c in shapes.values()) == len(front)
    assert sum(c["front_share"] for c in shapes.values()) == pytest.approx(1.0)


def test_parameter_importance_per_objective(store_url):
    data = D.load_study_data(D.Store(store_url), "demo")
    imp = D.param_importance(data)
    assert {i["objective"] for i in imp} == {"accuracy", "flops"}
    params = {i["param"] for i in imp}
    # genome features every trial has, not only the genes every trial shares
    assert {"stages", "total depth", "stage 1 mixer", "stage 2 depth", "stage 2 width"} <= params
    assert any(p.endswith(" share of blocks") for p in params)
    for o in ("accuracy", "flops"):
        assert sum(i["importance"] for i in imp if i["objective"] == o) == pytest.approx(1.0)
    empty = D.load_study_data(D.Store(store_url), "empty")
    assert D.param_importance(empty) == []


def test_genome_features_cover_absent_stages():
    from search_space import get_preset

    iso = get_preset("deit_tiny").to_json()
    f = D.genome_features(iso, max_stages=3, mixers=["attention", "window"])
    assert f["stages"] == 1 and f["stage 1 mixer"] == "attention" and f["attention share of blocks"] == 1.0
    assert f["stage 3 depth"] == 0 and f["stage 3 width"] == 0 and f["stage 3 mixer"] == "-"
    assert f["window share of blocks"] == 0 and f["total depth"] == f["stage 1 depth"] == 12
    assert D.genome_features("not json") == {} and D.genome_features(None) == {}


def test_importance_finds_the_feature_that_decides():
    """Accuracy set by stage 2's mixer alone, FLOPs by stage 1's width alone: fANOVA over genome
    features ranks those first (#19.5)."""
    import types

    from evaluators.random_genomes import random_genome

    recs = []
    for i in range(120):
        g = random_genome(i, img_size=32, num_classes=10, mixers=("attention", "sepconv", "pool"))
        if len(g.stages) < 2:
            continue
        acc = {"attention": 0.9, "sepconv": 0.6, "pool": 0.3}[g.stages[1].mixer] + 0.001 * (i % 7)
        flops = g.stages[0].dim * 1e6 + i
        recs.append(F.TrialRecord(number=i, state="COMPLETE", genome=g.to_json(), arch_id=g.arch_id,
                                  values={"accuracy": acc, "flops": flops}, feasible=True))
    assert len(recs) > 50
    data = types.SimpleNamespace(objectives=[("accuracy", "maximize"), ("flops", "minimize")], records=recs)
    imp = D.param_importance(data)
    top = {o: max((i for i in imp if i["objective"] == o), key=lambda i: i["importance"]) for o in ("accuracy", "flops")}
    assert top["accuracy"]["param"] == "stage 2 mixer", imp
    assert top["flops"]["param"] in ("stage 1 width", "final width", "stage 2 width"), imp


def test_reference_points(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    from nas.dashboard import references

    monkeypatch.setattr(references, "_REF_MEMO", {})
    data = D.load_study_data(D.Store(store_url), "demo")
    refs = {r["name"]: r for r in D.reference_points(data.info, data.records,
                                                     ["preset:deit_tiny", "preset:pvt_v2_b0", "timm:resnet18"])}
    stored = data.info.user_attrs[A.STUDY_PRESETS]
    # presets: costs as the search stored them; accuracy only where evaluated with the recipe
    assert refs["preset:deit_tiny"]["flops"] == stored["deit_tiny"]["flops"]
    assert refs["preset:deit_tiny"]["accuracy"] == 0.71
    assert refs["preset:pvt_v2_b0"]["accuracy"] is None
    # timm: counted by the project's counter at the study's resolution (ResNet-18: 1.82 GMACs at 224)
    r18 = refs["timm:resnet18"]
    assert r18["accuracy"] is None and r18["source"] == "counted"
    assert r18["flops"] == pytest.approx(1.82e9, rel=0.03)
    assert r18["params"] == pytest.approx(11.18e6, rel=0.01)  # 10-class head
    cache = json.loads((tmp_path / "cache" / "reference_costs.json").read_text())
    assert cache["timm:resnet18@224/10"]["flops"] == r18["flops"]
    # cached: the non-counting variant now has it, an uncounted one is pending
    got = {r["name"]: r for r in D.cached_reference_points(data.info, data.records, ["timm:resnet18", "timm:resnet50"])}
    assert got["timm:resnet18"]["flops"] == r18["flops"] and got["timm:resnet50"].get("pending")


def test_default_references_are_the_ones_nearest_the_budget(store_url, monkeypatch):
    """A few references by default, those whose FLOPs are nearest the study's max_flops (#19.3)."""
    from nas.dashboard import references

    data = D.load_study_data(D.Store(store_url), "demo")
    assert D.study_budget_flops(data.info, data.records) == 3.0e9  # the study's [constraints] max_flops
    cands = D.reference_candidates(data.info)
    assert len(cands) > D.DEFAULT_REFERENCE_COUNT
    img, ncls = data.info.img_size or 224, data.info.num_classes or 1000
    timm_costs = {"timm:resnet18": 1.82e9, "timm:resnet50": 4.1e9, "timm:mobilenetv3_large_100": 0.22e9,
                  "timm:efficientnet_b0": 0.39e9, "timm:convnext_tiny": 4.5e9}
    monkeypatch.setattr(references, "_REF_MEMO", {f"{n}@{img}/{ncls}": {"name": n, "flops": int(f), "params": 1}
                                                  for n, f in timm_costs.items()})
    known = {r["name"]: r["flops"] for r in D.cached_reference_points(data.info, [], cands) if r.get("flops")}
    assert set(timm_costs) < set(known)  # the presets' costs come from the study
    nearest = sorted(known, key=lambda n: abs(math.log(known[n] / 3.0e9)))[:D.DEFAULT_REFERENCE_COUNT]
    got = D.default_references(data.info, data.records)
    assert sorted(got) == sorted(nearest) and len(got) == D.DEFAULT_REFERENCE_COUNT
    # nothing counted yet and no preset costs stored: the first presets, still only a few
    monkeypatch.setattr(references, "_REF_MEMO", {})
    bare = D.StudyInfo(name="x", study_id=0, directions=[], objectives=[])
    assert D.default_references(bare) == D.reference_candidates(bare)[:D.DEFAULT_REFERENCE_COUNT]


def test_reference_labels_do_not_collide():
    from nas.dashboard import figures as FIG

    pos = [0.90, 0.905, 0.91, 0.95, 0.97, 0.99, 0.991, 0.3, 0.31]
    tiers = FIG.label_tiers(pos)
    placed = [(t, p) for t, p in zip(tiers, pos) if t is not None]
    for t in set(t for t, _ in placed):
        row = sorted(p for tt, p in placed if tt == t)
        assert all(b - a >= FIG.LABEL_GAP for a, b in zip(row, row[1:]))
    assert tiers[7] == 0 and tiers[8] == 1 and tiers[1] == 1 and tiers[2] is None
    # 13 references on the figure: one legend entry each, labels in distinct slots
    refs = [{"name": f"timm:m{i}", "label": f"m{i}", "kind": "timm", "flops": 1e9 * (1 + 0.01 * i), "accuracy": None}
            for i in range(13)]
    rows = [{"number": 0, "category": "front", "flops": 1e5, "accuracy": 0.9, "summary": "s"}]
    fig = FIG.pareto_figure(rows, [], "flops", "accuracy", references=refs)
    assert sum(1 for t in fig.data if (t.meta or {}).get("reference")) == 13
    slots = [(a.x, a.y) for a in fig.layout.annotations]
    assert 1 <= len(slots) <= 2 and len(set(slots)) == len(slots)


def test_architecture_detail_stored_and_computed(store_url):
    data = D.load_study_data(D.Store(store_url), "demo")
    rec = data.record(data.front[0])
    arch = D.architecture(rec, study_name="demo", storage_url=store_url)
    assert arch["cost_source"] == "store"
    assert [s["flops"] for s in arch["stages"]] == rec.user_attrs[A.FLOPS_PER_STAGE]
    assert arch["accuracy_per_epoch"] == rec.accuracy_per_epoch
    assert arch["export_command"] == (f"nas export demo --storage {store_url} --trial {rec.number} "
                                      f"--out exported/demo-{rec.number}")
    # a trial without per-stage costs: counted on demand with evaluators.count_flops
    from evaluators import count_flops, count_params
    from search_space import build_model, get_preset

    g = get_preset("pvt_v2_b0").replace(img_size=64, num_classes=10)
    bare = F.TrialRecord(number=99, state="COMPLETE", genome=g.to_json(), summary=g.summary())
    arch = D.architecture(bare, study_name="demo", compute=True)
    assert arch["cost_source"] == "computed" and len(arch["stages"]) == 4
    model = build_model(g).eval()
    total = int(count_flops(model, input_size=(3, 64, 64)))
    stage_flops = [s["flops"] for s in arch["stages"]]
    assert all(f > 0 for f in stage_flops) and 0.8 * total < sum(stage_flops) <= total
    assert sum(s["params"] for s in arch["stages"]) < count_params(model)
    timed = D.architecture(bare, study_name="demo", measure_latency=True, img_size=64)
    assert len([s["latency_ms"] for s in timed["stages"] if s["latency_ms"] > 0]) == 4


def test_figures_from_records(store_url):
    from nas.dashboard import figures as FIG
    from nas.dashboard.app import build_views, table_rows

    data = D.load_study_data(D.Store(store_url), "tri")
    views = build_views(data, "flops", "accuracy", [{"name": "preset:x", "label": "x", "kind": "preset",
                                                     "flops": 1e9, "accuracy": None}])
    drawn = sum(len(t.x) for t in views["pareto"].data if (t.meta or {}).get("category") in FIG.CATEGORY_STYLE)
    expected = sum(1 for r in data.rows if r["category"] in FIG.CATEGORY_STYLE
                   and (r["accuracy"] is not None or r["category"] == "infeasible"))
    assert drawn == expected > 0
    infeasible = [r for r in data.rows if r["category"] == "infeasible"]
    assert infeasible and all(r["accuracy"] is None for r in infeasible)  # told 0, never trained
    rug = next(t for t in views["pareto"].data if (t.meta or {}).get("category") == "infeasible")
    assert len(rug.y) == len(infeasible) and max(rug.y) < min(r["accuracy"] for r in data.rows
                                                             if r["accuracy"] is not None)
    assert views["pareto3d"] is not None and len(views["pareto3d"].data) == len(FIG.CATEGORY_STYLE)
    assert any(s.x0 == 1e9 for s in views["pareto"].layout.shapes)  # reference with no accuracy: a line
    # big studies switch to WebGL
    many = [dict(data.rows[0], number=i) for i in range(FIG.WEBGL_ABOVE + 1)]
    assert FIG.pareto_figure(many, [], "flops", "accuracy").data[0].type == "scattergl"
    rows = table_rows(data.rows, states=["COMPLETE"], feasible=["yes"],
                      sort_by=[{"column_id": "accuracy", "direction": "desc"}])
    accs = [r["accuracy"] for r in rows]
    assert rows and accs == sorted(accs, reverse=True) and all(r["feasible"] == "yes" for r in rows)


def test_report_is_self_contained(store_url, tmp_path):
    from nas.dashboard.report import build_report

    out = tmp_path / "report.html"
    info = build_report(store_url, "tri", out, references=["preset:deit_tiny"], count_references=False)
    text = out.read_text()
    assert info["trials"] == 25 and info["front"] > 0
    assert text.count("<script") >= info["figures"]
    assert not re.search(r"<script[^>]*\bsrc=", text), "a script is loaded from elsewhere: not offline"
    assert "plotly.js v" in text  # the library itself is inlined
    assert "nas export tri --storage" in text and "3D front" in text
    with pytest.raises(D.StoreError, match="no trials"):
        build_report(store_url, "empty", tmp_path / "x.html")


def test_serving_never_writes_the_store(store_url):
    from nas.dashboard.app import build_views, create_app

    before = _digest(store_url)
    app = create_app(store_url, study="demo", count_references=False)
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout").get_data(as_text=True)
    assert "demo" in layout and "Cannot read" not in layout
    state = app.server.config["NAS_STATE"]
    for name in ("demo", "tri", "empty"):
        data = state.data(name)
        if data.rows:
            build_views(data, "flops", "accuracy", [])
            state.importance(data)
    with pytest.raises(Exception, match="readonly"):
        with state.store.engine.begin() as c:
            c.exec_driver_sql("UPDATE studies SET study_name = 'x'")
    assert _digest(store_url) == before


def test_detail_area_starts_with_a_prompt(store_url):
    """Before a trial is selected the detail area is a sentence, not two empty plots (#19.4)."""
    from nas.dashboard.app import DETAIL_PROMPT, create_app

    layout = json.loads(create_app(store_url, study="demo", count_references=False).server.test_client()
                        .get("/_dash-layout").get_data(as_text=True))

    def find(node, id_):
        if isinstance(node, dict):
            if node.get("props", {}).get("id") == id_:
                return node["props"]
            for v in node.values():
                if (got := find(v, id_)) is not None:
                    return got
        elif isinstance(node, list):
            for v in node:
                if (got := find(v, id_)) is not None:
                    return got
        return None

    assert find(layout, "detail-box")["style"] == {"display": "none"}
    assert find(layout, "detail-hint")["children"] == DETAIL_PROMPT


def test_missing_unknown_empty_and_foreign_stores(tmp_path):
    from nas.dashboard.app import create_app

    missing = tmp_path / "nope.db"
    with pytest.raises(D.StoreError, match="does not exist"):
        D.Store(f"sqlite:///{missing}")
    assert not missing.exists()
    layout = create_app(f"sqlite:///{missing}").server.test_client().get("/_dash-layout").get_data(as_text=True)
    assert "Cannot read the store" in layout and "does not exist" in layout
    assert not missing.exists()

    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x int)").connection.commit()
    with pytest.raises(D.StoreError, match="not an Optuna study store"):
        D.Store(f"sqlite:///{foreign}")

    with pytest.raises(D.StoreError, match="cannot reach"):
        D.Store("postgresql://nobody@127.0.0.1:1/none")

    url = f"sqlite:///{tmp_path / 'one.db'}"
    create_demo_study(fast_storage(url), "only")
    client = create_app(url, study="other", count_references=False).server.test_client()
    layout = client.get("/_dash-layout").get_data(as_text=True)
    assert "No study 'other'" in layout
    state = create_app(url, count_references=False).server.config["NAS_STATE"]
    assert state.data("only").rows == []
    with pytest.raises(D.StoreError, match="no study 'zzz'"):
        state.data("zzz")


def test_host_warning():
    from nas.dashboard.app import check_host

    assert check_host("127.0.0.1") is None and check_host("localhost") is None
    assert "reachable from other machines" in check_host("0.0.0.0")


def test_metric_helpers():
    rec = F.TrialRecord(number=0, state="COMPLETE", values={"accuracy": 0.5}, flops=10, feasible=None,
                        constraints={"max_flops": 0.2})
    assert D.feasibility(rec) is False
    rec.optuna_constraints = {"max_flops": -1.0}
    assert D.feasibility(rec) is True
    assert D.metric(rec, "accuracy") == 0.5 and D.metric(rec, "flops") == 10.0
    assert D.genome_facets(None) == {} and D.genome_facets("{not json") == {}
    assert math.isclose(D.read_only_url("postgresql://u@h/db")[1]["connect_args"]["options"].count("read_only"), 1)


def test_postgres_store_is_read_only():
    import os
    import uuid

    import optuna
    import sqlalchemy

    from nas.store import normalize_url

    pg = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        eng = sqlalchemy.create_engine(normalize_url(pg), connect_args={"connect_timeout": 3})
        eng.connect().close()
        eng.dispose()
    except Exception:
        pytest.skip(f"no PostgreSQL server at {pg}")
    name = f"pytest_dash_{uuid.uuid4().hex[:8]}"
    try:
        write_demo_study(normalize_url(pg), name, 8, seed=2)
        store = D.Store(pg)
        data = D.load_study_data(store, name)
        assert len(data.rows) == 8 and data.front
        with pytest.raises(Exception, match="read-only transaction"):
            with store.engine.begin() as c:
                c.exec_driver_sql("UPDATE studies SET study_name = study_name")
        store.engine.dispose()
    finally:
        optuna.delete_study(study_name=name, storage=normalize_url(pg))


def test_report_command_line(store_url, tmp_path, capsys):
    from nas.cli import main

    out = tmp_path / "r.html"
    assert main(["report", "tri", "--storage", store_url, "--out", str(out), "--no-count-references",
                 "--x", "params"]) == 0
    assert out.stat().st_size > 1_000_000 and "wrote" in capsys.readouterr().err
    assert main(["report", "nope", "--storage", store_url, "--out", str(out)]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_store_written_by_the_search(tmp_path):
    """A study run by the search itself (synthetic accuracies, real genomes and costs): every view
    has data and the report is written."""
    from nas.dashboard.app import build_views
    from nas.dashboard.report import build_report
    from nas.testing import make_tiny_study

    url = f"sqlite:///{tmp_path / 'real.db'}"
    make_tiny_study(url, "tiny", trials=10, objectives=("accuracy", "flops", "params"))
    before = _digest(url)
    data = D.load_study_data(D.Store(url), "tiny")
    assert len(data.rows) == 10 and data.front and data.info.img_size
    assert all(r["mixer"] and r["stem"] and r["shape"] for r in data.rows if r["state"] == "COMPLETE")
    views = build_views(data, "flops", "accuracy", D.reference_points(data.info, data.records, ["preset:deit_tiny"],
                                                                      compute=False))
    assert views["pareto3d"] is not None and D.hypervolume_history(data)["by_trial"][-1]["hypervolume"] > 0
    arch = D.architecture(data.record(data.front[0]), study_name="tiny")
    assert arch["cost_source"] == "store" and all(s["flops"] is not None for s in arch["stages"])
    info = build_report(url, "tiny", tmp_path / "r.html", count_references=False)
    assert info["front"] == len(data.front)
    assert _digest(url) == before


def test_stage_profile_goes_through_the_evaluators():
    """Per-stage costs are ``evaluators.screen``'s, equal to counting the built model stage by
    stage; per-stage latency is ``evaluators.latency.measure_parts``'s, one positive figure a stage."""
    from evaluators import count_flops, count_params
    from search_space import build_model, get_preset

    g = get_preset("pvt_v2_b0").replace(img_size=64, num_classes=10)
    flops, params = D.stage_costs(g.to_json())
    model = build_model(g).eval()
    fc = count_flops(model, input_size=(3, 64, 64))
    assert flops == [fc.module(f"stages.{i}") for i in range(4)]
    assert params == [int(count_params(s)) for s in model.stages]
    assert D.stage_costs(g.to_json(), 32)[0] == list(__import__("evaluators").screen(g, 32).flops_per_stage)
    lat = D.stage_latency(g.to_json(), repeats=2, warmup=1)
    assert len(lat) == 4 and all(isinstance(t, float) and t > 0 for t in lat)
