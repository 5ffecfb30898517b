"""`nas search` / `nas front` end to end on SQLite: the store schema, constraints, reuse, resume,
failures and the one-line errors. Synthetic accuracies keep most of these fast; one test trains
real proxies on digits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nas import attrs
from nas.cli import main
from nas.front import hypervolume, load_trials, pareto_front
from nas.testing import make_tiny_study, tiny_study_text

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    d = tmp_path / "studies"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(text)
    return p


def _url(tmp_path: Path, name: str = "t.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def test_search_then_front_end_to_end(tmp_path, capsys):
    url = _url(tmp_path)
    study = _write(tmp_path, tiny_study_text("e2e", url, trials=10))
    assert main(["search", str(study), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "hypervolume" in out
    html = tmp_path / "studies" / "e2e_front.html"
    text = html.read_text()
    assert "plotly" in text and len(text) > 1_000_000  # plotly.js inlined: opens offline
    assert "deit_tiny" in text  # the preset is marked

    recs = load_trials(url, "e2e")
    assert len(recs) == 10
    for r in recs:
        assert r.state == "COMPLETE"
        ua = r.user_attrs
        for key in (attrs.GENOME, attrs.ARCH_ID, attrs.SUMMARY, attrs.FLOPS, attrs.PARAMS, attrs.FEASIBLE,
                    attrs.CONSTRAINTS, attrs.CODE_VERSION, attrs.FLOPS_PER_STAGE):
            assert key in ua, key
        from search_space import ArchSpec

        assert ArchSpec.from_json(r.genome).arch_id == r.arch_id
        if r.feasible:
            assert attrs.ACCURACY_PER_EPOCH in ua and r.epochs == r.epoch_budget == 2
            assert r.values["flops"] == r.flops <= 2_000_000
        else:  # over budget: recorded with its constraint values, never trained
            assert r.flops > 2_000_000 and r.constraints["max_flops"] > 0
            assert attrs.ACCURACY_PER_EPOCH not in ua and "over budget" in r.failure

    assert main(["front", "e2e", "--storage", url, "--json"]) == 0
    members = json.loads(capsys.readouterr().out)
    front = pareto_front(recs, ["accuracy", "flops"])
    assert [m["trial"] for m in members] == [r.number for r in front]
    for m in members:
        assert {"trial", "values", "genome", "flops", "params"} <= set(m)
        assert m["genome"]["stages"] and m["values"]["flops"] == m["flops"]
    assert main(["front", str(study), "--csv"]) == 0
    csv_lines = capsys.readouterr().out.strip().splitlines()
    assert csv_lines[0].startswith("trial,accuracy,flops") and len(csv_lines) == len(front) + 1
    assert hypervolume(recs, ["accuracy", "flops"], [0.0, 2e6]) > 0


def test_resume_continues_with_the_named_sampler(tmp_path, capsys):
    url = _url(tmp_path)
    study = _write(tmp_path, tiny_study_text("res", url, trials=4))
    assert main(["search", str(study), "--no-progress"]) == 0
    first = {r.number: r for r in load_trials(url, "res")}
    assert main(["search", str(study), "--no-progress"]) == 0  # already done: says so
    assert "already holds 4 trials" in capsys.readouterr().out
    assert main(["search", str(study), "--no-progress", "--trials", "7", "--sampler", "tpe"]) == 0
    after = {r.number: r for r in load_trials(url, "res")}
    assert len(after) == 7
    for n, r in first.items():  # nothing finished was lost or changed
        assert after[n].values == r.values and after[n].arch_id == r.arch_id


def test_same_genome_is_trained_once(tmp_path):
    from nas.testing import one_genome_study_text

    text = one_genome_study_text("dup", _url(tmp_path), trials=5)  # a space with exactly one genome
    p = _write(tmp_path, text)
    assert main(["search", str(p), "--no-progress"]) == 0
    recs = load_trials(_url(tmp_path), "dup")
    assert len({r.arch_id for r in recs}) == 1
    trained = [r for r in recs if r.reused_from is None]
    assert len(trained) == 1
    for r in recs:
        if r.reused_from is not None:
            assert r.reused_from == trained[0].number and r.accuracy == trained[0].accuracy
    assert len(pareto_front(recs, ["accuracy", "flops"])) == 1  # one genome, one front member


def test_single_objective_with_pruning(tmp_path):
    text = tiny_study_text("single", _url(tmp_path), trials=12, objectives=("accuracy",), sampler="tpe")
    text = text.replace("batch_size = 32", 'batch_size = 32\nfidelity = { pruner = "median", min_epochs = 1 }')
    text = text.replace("epochs = 2", "epochs = 4")
    assert main(["search", str(_write(tmp_path, text)), "--no-progress"]) == 0
    study = optuna.load_study(study_name="single", storage=_url(tmp_path))
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    states = {t.state.name for t in study.trials}
    assert "COMPLETE" in states
    for t in study.trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs[attrs.EPOCHS] < t.user_attrs[attrs.EPOCH_BUDGET]
            assert t.user_attrs[attrs.FAILURE].startswith("pruned")
        if t.state.name == "COMPLETE" and t.user_attrs[attrs.FEASIBLE] and attrs.REUSED_FROM not in t.user_attrs:
            assert len(t.intermediate_values) == 4


def test_real_proxy_training_and_a_diverging_trial(tmp_path):
    # one real proxy trial on 64 digits; then a recipe that diverges: FAILED with its reason,
    # and the search goes on to the next trial
    url = _url(tmp_path)
    make_tiny_study(url, "proxy", trials=1, proxy=True)
    (r,) = load_trials(url, "proxy")
    if r.feasible:
        assert r.state == "COMPLETE" and 0.0 <= r.accuracy <= 1.0 and len(r.accuracy_per_epoch) == 1
        assert r.train_time_s > 0
    text = tiny_study_text("nan", url, trials=2, kind="proxy", epochs=1, max_flops="50M")
    text = text.replace("batch_size = 32", "batch_size = 32\nlr = 1e9")
    assert main(["search", str(_write(tmp_path, text)), "--no-progress"]) == 0
    recs = load_trials(url, "nan")
    assert len(recs) == 2
    for r in recs:
        assert r.state == "FAIL" and "diverged" in r.failure


def test_one_line_errors(tmp_path, capsys):
    bad = _write(tmp_path, "[study]\nname = 'x'\ntrials = \n", "bad.toml")
    assert main(["search", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.toml, line 3" in err

    tight = _write(tmp_path, tiny_study_text("tight", _url(tmp_path), max_flops="1K"), "tight.toml")
    assert main(["search", str(tight)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no candidate of the space meets the budget" in err
    assert "smallest seen had" in err and "no preset fits" in err

    unreachable = _write(tmp_path, tiny_study_text("u", "postgresql://nobody@127.0.0.1:1/none"), "u.toml")
    assert main(["search", str(unreachable)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot open storage postgresql://nobody@127.0.0.1:1/none" in err

    text = tiny_study_text("c", _url(tmp_path), kind="proxy").replace(
        'dataset = "digits"', f'dataset = "cifar10"\nroot = "{tmp_path / "no_such_dir"}"')
    assert main(["search", str(_write(tmp_path, text, "c.toml"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no_such_dir" in err and "does not exist" in err

    assert main(["front", "nothing_here", "--storage", _url(tmp_path, "t.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no study 'nothing_here'" in err


def test_ctrl_c_stops_cleanly_nothing_left_running(tmp_path):
    url = _url(tmp_path)
    text = tiny_study_text("intr", url, trials=3, kind="proxy", epochs=1, max_flops="50M")
    text = text.replace("subset = 64", "subset = 600").replace("epochs = 1", "epochs = 40")
    p = _write(tmp_path, text)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(p), "--no-progress"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        running = False
        while time.time() < deadline and not running:
            time.sleep(1.0)
            try:
                st = optuna.load_study(study_name="intr", storage=url)
                running = any(t.state.name == "RUNNING" and attrs.GENOME in t.user_attrs
                              and t.user_attrs.get(attrs.FEASIBLE) for t in st.trials)
            except Exception:
                pass
        assert running, "no trial started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    recs = load_trials(url, "intr")
    interrupted = [r for r in recs if r.state == "FAIL"]
    assert interrupted and all(r.failure == "interrupted" for r in interrupted)
    assert not [r for r in recs if r.state == "RUNNING"]


def test_zero_cost_evaluator_and_latency_objective(tmp_path):
    url = _url(tmp_path)
    text = tiny_study_text("zc", url, trials=3, kind="zero_cost", objectives=("accuracy", "latency_ms"), max_flops="50M")
    text = text.replace("batch_size = 32", 'batch_size = 32\nzero_cost = "naswot"')
    text = text.replace('max_flops = "50M"', 'max_flops = "50M"\nmax_latency_ms = 1000.0')
    assert main(["search", str(_write(tmp_path, text)), "--no-progress"]) == 0
    recs = load_trials(url, "zc")
    assert len(recs) == 3
    for r in recs:
        assert r.state == "COMPLETE", r.failure
        ua = r.user_attrs
        if r.reused_from is None:
            assert r.values["accuracy"] == ua[attrs.ZERO_COST]["naswot"]
        assert r.accuracy is None  # a zero-cost score is stored as such, not as an accuracy
        assert r.latency_ms and r.latency_ms > 0 and r.values["latency_ms"] == r.latency_ms
        assert ua[attrs.LATENCY_DEVICE].startswith("cpu") and ua[attrs.LATENCY_SETTING]["batch"] == 1
        assert r.constraints["max_latency_ms"] == pytest.approx(r.latency_ms - 1000.0)


def test_resume_with_a_changed_space_is_refused(tmp_path, capsys):
    url = _url(tmp_path)
    p = _write(tmp_path, tiny_study_text("chg", url, trials=2))
    assert main(["search", str(p), "--no-progress"]) == 0
    p.write_text(tiny_study_text("chg", url, trials=4).replace("num_heads = [1, 2]", "num_heads = [1, 2, 4]"))
    assert main(["search", str(p), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was run with another space" in err and "new name" in err
    assert len(load_trials(url, "chg")) == 2


def test_workers_share_one_sqlite_store(tmp_path):
    url = _url(tmp_path)
    # real (short) training, so the first worker cannot finish everything before the second starts
    p = _write(tmp_path, tiny_study_text("wk", url, trials=10, max_flops="50M", kind="proxy", epochs=2))
    assert main(["search", str(p), "--no-progress", "--workers", "2"]) == 0
    st = optuna.load_study(study_name="wk", storage=url)
    trials = st.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials))) and 10 <= len(trials) <= 11
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs[attrs.WORKER] for t in trials}) == 2


def test_objective_names_are_recorded_for_optuna_tools(tmp_path):
    """optuna-dashboard and trials_dataframe() read the names set by ``set_metric_names``."""
    import optuna

    from nas.testing import make_tiny_study

    url = f"sqlite:///{tmp_path / 'names.db'}"
    make_tiny_study(url, "names", trials=2)
    study = optuna.load_study(study_name="names", storage=url)
    assert study.metric_names == ["accuracy", "flops"]


def test_measured_objective_with_cheap_caps_is_complete_and_infeasible(tmp_path):
    """Issue 13.3: a candidate over the FLOP cap of a study whose objective needs a measurement
    (latency) ends COMPLETE and infeasible, with its constraint values, off every front."""
    import math

    url = _url(tmp_path)
    text = tiny_study_text("lat", url, trials=5, sampler="random", objectives=("accuracy", "latency_ms"),
                           max_flops="400K")
    assert main(["search", str(_write(tmp_path, text)), "--no-progress"]) == 0
    recs = load_trials(url, "lat")
    over = [r for r in recs if r.flops > 400_000]
    assert over and len(over) < len(recs)
    for r in recs:
        assert r.state == "COMPLETE", r.failure
    for r in over:
        assert r.feasible is False and r.constraints == {"max_flops": r.flops - 400_000}
        assert r.values == {"accuracy": 0.0, "latency_ms": math.inf} and r.latency_ms is None
        assert r.failure.startswith("over budget: flops")
        study = optuna.load_study(study_name="lat", storage=url)
        assert study.trials[r.number].constraints == {"max_flops": pytest.approx((r.flops - 400_000) / 400_000)}
    front = pareto_front(recs, ["accuracy", "latency_ms"])
    assert front and not {r.number for r in front} & {r.number for r in over}
    assert all(r.latency_ms > 0 and r.values["latency_ms"] == r.latency_ms for r in recs if r.feasible)


def test_resume_with_changed_caps_is_refused(tmp_path, capsys):
    """Issue 13.4: feasibility is judged when a trial ends, so a resumed study keeps its caps;
    a changed cap is refused in one line, as a changed space is, and nothing is run."""
    url = _url(tmp_path)
    p = _write(tmp_path, tiny_study_text("caps", url, trials=2, max_flops="8M"))
    assert main(["search", str(p), "--no-progress"]) == 0
    p.write_text(tiny_study_text("caps", url, trials=4, max_flops="150K"))
    assert main(["search", str(p), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "'caps' in the store was run with another caps: max_flops 8M (file: 150K)" in err and "new name" in err
    p.write_text(tiny_study_text("caps", url, trials=4, max_flops="8M").replace(
        'max_flops = "8M"', 'max_flops = "8M"\nmax_params = "1M"'))
    assert main(["search", str(p), "--no-progress"]) == 2
    assert "another caps: max_params none (file: 1M)" in capsys.readouterr().err
    assert len(load_trials(url, "caps")) == 2
    p.write_text(tiny_study_text("caps", url, trials=3, max_flops="8M"))  # the same caps: resumes
    assert main(["search", str(p), "--no-progress"]) == 0
    assert len(load_trials(url, "caps")) == 3


@pytest.mark.parametrize("pruner", ["median", "asha", "hyperband"])
def test_pruners_first_prune_after_min_epochs(pruner):
    """Issue 20.6: steps are 1-based epochs; ``min_epochs = 3`` first prunes after epoch 3."""
    from nas.backends.optuna_backend import make_pruner
    from nas.study import parse_study

    text = tiny_study_text("p", objectives=("accuracy",), epochs=6).replace(
        "batch_size = 32", f'batch_size = 32\nfidelity = {{ pruner = "{pruner}", min_epochs = 3 }}')
    spec = parse_study(text.replace("epochs = 2", "epochs = 6"))
    assert spec.evaluator.epochs == 6 and spec.evaluator.fidelity.min_epochs == 3
    study = optuna.create_study(direction="maximize", pruner=make_pruner(spec))

    def run(level: float) -> int | None:  # the epoch after which the pruner stops the trial
        trial = study.ask()
        for epoch in range(1, 7):
            trial.report(level + 0.01 * epoch, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return epoch
        study.tell(trial, level + 0.06)
        return None

    for level in (0.8, 0.85, 0.9):  # each better than the last: the references, never pruned
        assert run(level) is None
    assert run(0.1) == 3


def test_pruning_respects_min_epochs_and_never_prunes_the_last_epoch(tmp_path):
    """Issues 20.6 and 20.7: with ``min_epochs = 3`` of 4, a pruned trial trained exactly 3
    epochs; with ``min_epochs`` = the budget, nothing is pruned: a trial that trained its
    whole budget is a complete result, on the front."""
    from nas.front import eligible

    url = _url(tmp_path)
    for name, min_epochs, epochs in (("p3", 3, 4), ("plast", 2, 2)):
        text = tiny_study_text(name, url, trials=12, objectives=("accuracy",), sampler="random")
        text = text.replace("batch_size = 32", f'batch_size = 32\nfidelity = {{ pruner = "median", min_epochs = {min_epochs} }}')
        text = text.replace("epochs = 2", f"epochs = {epochs}")
        assert main(["search", str(_write(tmp_path, text, f"{name}.toml")), "--no-progress"]) == 0
    recs = load_trials(url, "p3")
    pruned = [r for r in recs if r.state == "PRUNED" and r.reused_from is None]
    assert pruned and all(r.epochs == 3 and r.epoch_budget == 4 and len(r.accuracy_per_epoch) == 3 for r in pruned)
    recs = load_trials(url, "plast")
    trained = [r for r in recs if r.feasible and r.reused_from is None]
    assert trained and all(r.state == "COMPLETE" and r.epochs == r.epoch_budget == 2 for r in trained)
    study = optuna.load_study(study_name="plast", storage=url)
    import statistics

    def below_median(t):  # what MedianPruner checks at step 2 (the last epoch) after its 3 startup trials
        earlier = [u.intermediate_values[2] for u in study.trials[:t.number] if 2 in u.intermediate_values]
        return len(earlier) >= 3 and t.intermediate_values[2] < statistics.median(earlier)

    below = [t for t in study.trials if t.number in {r.number for r in trained} and below_median(t)]
    assert below  # trials the median rule would have pruned at their last epoch: complete instead
    assert {r.number for r in below} <= {r.number for r in eligible(recs, ["accuracy"])}


def test_ray_asha_first_stops_after_min_epochs():
    """Issue 20.6 on the Ray backend: ASHA's time is the 1-based epoch the trainable reports,
    so ``min_epochs = 3`` first stops a trial after epoch 3 (never at the final epoch, which is
    reported with the trial's result)."""
    from types import SimpleNamespace

    pytest.importorskip("ray.tune.schedulers")
    from ray.tune.schedulers import TrialScheduler

    from nas.backends.ray_backend import make_scheduler
    from nas.study import parse_study

    text = tiny_study_text("r", objectives=("accuracy",)).replace(
        "batch_size = 32", 'batch_size = 32\nfidelity = { pruner = "asha", min_epochs = 3, reduction_factor = 3 }')
    spec = parse_study(text.replace("epochs = 2", "epochs = 6")).replace(backend="ray")
    sched = make_scheduler(spec)

    def run(name: str, level: float) -> int | None:  # the epoch after which ASHA stops the trial
        trial = SimpleNamespace(trial_id=name)
        sched.on_trial_add(None, trial)
        for epoch in range(1, 6):  # epochs 1..5 are reported as they end; the 6th with the result
            if sched.on_trial_result(None, trial, {"epoch": epoch, "accuracy": level + 0.01 * epoch}) \
                    == TrialScheduler.STOP:
                return epoch
        sched.on_trial_complete(None, trial, {"epoch": 6, "accuracy": level + 0.06})
        return None

    for i, level in enumerate((0.8, 0.85, 0.9)):  # each better than the last: never stopped
        assert run(f"good{i}", level) is None
    assert run("weak", 0.1) == 3
