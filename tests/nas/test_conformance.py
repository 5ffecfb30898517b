"""One trial step, two backends: the same scenarios run on the Optuna backend and on the Ray
backend (a real local Ray instance, never a mock) and must leave the same store contents
(states, failure reasons, attribute names, values).

Scenarios: reuse across concurrent workers, a dead claim owner's genome taken over, a failing
(timeout) and a diverging candidate, an over-budget candidate, Ctrl-C. The spaces hold one
genome, so both backends see the same candidate whatever their samplers propose; evaluation is
``synthetic`` except where a real failure needs real training (64 digits, one or two epochs).
"""

from __future__ import annotations

import _thread
import dataclasses
import math
import threading
import time

import optuna
import pytest

from nas import attrs
from nas.backends import optuna_backend
from nas.backends.common import create_or_load
from nas.front import load_trials
from nas.store import ArchClaims, open_storage
from nas.study import parse_study
from nas.testing import one_genome_study_text as one_genome

BACKENDS = ["optuna", pytest.param("ray", marks=pytest.mark.slow)]
VOLATILE = {attrs.WORKER, attrs.TRAIN_TIME_S, attrs.CODE_VERSION}
SEEN: dict[str, dict[str, list]] = {}   # scenario -> backend -> store view


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module's Ray runs (started on first use)."""
    state: dict[str, bool] = {}

    def start() -> None:
        import logging

        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            state["started"] = True

    yield start
    if state.get("started"):
        import ray

        ray.shutdown()


def make(tmp_path, backend: str, text: str, **ray_kw):
    spec = parse_study(text)
    if backend == "ray":
        spec = spec.replace(backend="ray", ray=dataclasses.replace(spec.ray, cpus_per_trial=1, **ray_kw))
    create_or_load(spec, open_storage(spec.storage, heartbeat_s=None))  # no budget pre-check: a scenario may be over it
    return spec


def run(spec, backend: str, ray_session):
    if backend == "ray":
        from nas.backends import ray_backend

        ray_session()
        return ray_backend.run(spec, target=spec.trials, show_progress=False)
    return optuna_backend.run(spec, target=spec.trials, show_progress=False)


def view(url: str, name: str) -> list[tuple]:
    """What the store holds, per trial, minus what differs by nature (worker, timings)."""
    out = []
    for r in sorted(load_trials(url, name), key=lambda r: r.number):
        keys = tuple(sorted(set(r.user_attrs) - VOLATILE))
        out.append((r.number, r.state, r.failure, r.reused_from, r.feasible, r.epochs, r.epoch_budget,
                    r.accuracy, tuple(sorted(r.values.items())), keys))
    return out


def same_on_both(scenario: str, backend: str, got: list) -> None:
    """Once both backends ran a scenario, their store views must be identical."""
    SEEN.setdefault(scenario, {})[backend] = got
    if len(SEEN[scenario]) == 2:
        assert SEEN[scenario]["optuna"] == SEEN[scenario]["ray"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reuse_across_concurrent_workers(tmp_path, backend, ray_session):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = make(tmp_path, backend, one_genome("reuse", url, trials=4), max_concurrent=2)
    if backend == "optuna":  # two workers of this process at once, each its own sampler and study
        threads = [threading.Thread(target=optuna_backend.run_worker, args=(spec, 4, i)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        assert run(spec, backend, ray_session).done == 4
    got = view(url, "reuse")
    assert [g[1] for g in got] == ["COMPLETE"] * 4
    trained = [g for g in got if g[3] is None]
    assert len(trained) == 1  # one genome, one training
    for g in got:
        if g[3] is not None:
            assert g[3] == trained[0][0] and g[7] == trained[0][7] and g[8] == trained[0][8]
            assert attrs.REUSED_FROM in g[9]
    assert trained[0][5] == trained[0][6] == 2
    # which trial trained depends on who came first; what the store says does not
    same_on_both("reuse", backend, sorted((g[1], g[2], g[3] is None, g[4], g[5], g[6], g[7], g[8]) for g in got))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dead_claim_owner_is_taken_over(tmp_path, backend, ray_session):
    from nas.evaluator import TrialEvaluator
    from nas.trial import TrialStep

    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = make(tmp_path, backend, one_genome("dead", url, trials=1))
    # what a worker killed mid-training leaves: its trial claimed the genome and was then
    # failed by the heartbeat check (FAIL, no reason of its own)
    storage = open_storage(url, heartbeat_s=None)
    study = optuna.load_study(study_name="dead", storage=storage)
    trial = study.ask()
    cand = TrialStep(TrialEvaluator(spec)).start(trial)
    claims = ArchClaims(storage)
    assert claims.claim("dead", cand.arch_id, trial.number) == 0
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert run(spec, backend, ray_session).done == 1
    got = view(url, "dead")
    assert [(g[0], g[1], g[3]) for g in got] == [(0, "FAIL", None), (1, "COMPLETE", None)]
    assert got[0][2] == "worker lost (no heartbeat)" and got[1][5] == got[1][6] == 2
    assert claims.claim("dead", cand.arch_id, 99) == 1  # the claim moved to the trial that trained it
    same_on_both("dead", backend, got)


@pytest.mark.parametrize("backend", BACKENDS)
def test_failing_and_diverging_candidates(tmp_path, backend, ray_session):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    timeout = one_genome("slow", url, trials=1, kind="proxy", epochs=2).replace(
        "batch_size = 32", "batch_size = 32\ntime_limit_s = 1e-6")
    diverge = one_genome("nan", url, trials=1, kind="proxy", epochs=1).replace("batch_size = 32", "batch_size = 32\nlr = 1e9")
    for text in (timeout, diverge):
        assert run(make(tmp_path, backend, text), backend, ray_session).done == 1
    (slow,) = view(url, "slow")
    assert slow[1] == "FAIL" and slow[2].startswith("timeout: time limit 1e-06s reached after 0 of 2 epochs")
    assert slow[5] == 0 and slow[6] == 2 and not slow[8]
    (nan,) = view(url, "nan")
    assert nan[1] == "FAIL" and nan[2].startswith("diverged") and not nan[8]
    assert attrs.ACCURACY not in nan[9] and attrs.GENOME in nan[9]
    same_on_both("fail", backend, [slow, nan])


@pytest.mark.parametrize("backend", BACKENDS)
def test_over_budget_candidate(tmp_path, backend, ray_session):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = make(tmp_path, backend, one_genome("over", url, trials=1, objectives=("accuracy", "latency_ms"),
                                              max_flops="1K"))
    assert run(spec, backend, ray_session).done == 1
    (g,) = view(url, "over")
    (r,) = load_trials(url, "over")
    assert g[1] == "COMPLETE" and g[4] is False and g[2].startswith("over budget: flops")
    assert r.values == {"accuracy": 0.0, "latency_ms": math.inf}
    assert r.constraints == {"max_flops": r.flops - 1000} and r.epochs is None  # never trained
    assert attrs.ACCURACY_PER_EPOCH not in g[9] and attrs.LATENCY_MS not in g[9]
    same_on_both("over", backend, [g])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c(tmp_path, backend, ray_session):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    text = one_genome("intr", url, trials=2, kind="proxy", epochs=40).replace("subset = 64", "subset = 600")
    # one trial at a time on both backends (the Optuna run has one worker): with two concurrent Ray
    # trials, whether the second had started when Ctrl-C came depended on the machine's load
    spec = make(tmp_path, backend, text, max_concurrent=1)
    seen: dict[str, bool] = {}

    def press_ctrl_c_when_training() -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            time.sleep(0.5)
            st = optuna.load_study(study_name="intr", storage=open_storage(url, heartbeat_s=None))
            if any(t.state.name == "RUNNING" and t.user_attrs.get(attrs.FEASIBLE) for t in st.get_trials()):
                time.sleep(1.0)
                seen["pressed"] = True
                _thread.interrupt_main()
                return

    presser = threading.Thread(target=press_ctrl_c_when_training, daemon=True)
    presser.start()
    result = run(spec, backend, ray_session)
    presser.join()
    assert seen.get("pressed") and result.interrupted and result.done == 0
    got = view(url, "intr")
    assert [(g[1], g[2]) for g in got] == [("FAIL", "interrupted")]  # nothing left RUNNING
    same_on_both("intr", backend, [(g[1], g[2], g[3], g[4]) for g in got])
