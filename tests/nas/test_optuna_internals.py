"""Every private Optuna (and Ray ``OptunaSearch``) name the project uses, exercised against the
installed versions: a release that renames or reshapes one fails here, naming what moved.
``nas.optuna_internals`` is the only module that touches them (checked below by reading the tree)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from nas import optuna_internals as oi

ROOT = Path(__file__).resolve().parents[2]


def test_the_pinned_optuna_range_is_the_installed_one():
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'"optuna>=([0-9.]+),<([0-9.]+)"', text)
    assert m, "pyproject.toml pins optuna to a tested range"
    lo, hi = (tuple(int(x) for x in v.split(".")) for v in m.groups())
    have = tuple(int(x) for x in optuna.__version__.split(".")[:2])
    assert lo[:2] <= have < hi[:2], f"installed optuna {optuna.__version__} outside the tested range {m.groups()}"


def test_batched_user_attrs_write_in_one_transaction(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage, study_name="a")
    trial = study.ask()
    commits = []
    import sqlalchemy as sa

    sa.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    assert oi.set_user_attrs_batch(trial, {"a": 1, "b": [1, 2], "c": {"x": "y"}}) is True
    assert len(commits) == 1  # one transaction for three attributes
    assert oi.trial_id(trial) == study.trials[0]._trial_id == oi.trial_id(study.trials[0])
    assert trial.user_attrs == {"a": 1, "b": [1, 2], "c": {"x": "y"}}  # the live trial's cache agrees
    study.tell(trial, 1.0)
    assert study.trials[0].user_attrs == {"a": 1, "b": [1, 2], "c": {"x": "y"}}


def test_batched_write_declines_a_storage_that_is_not_rdb():
    study = optuna.create_study()  # in-memory storage: the caller writes one by one
    trial = study.ask()
    assert oi.set_user_attrs_batch(trial, {"a": 1}) is False
    assert trial.user_attrs == {}


def test_constraints_decoded_from_system_attrs():
    study = optuna.create_study()
    trial = study.ask()
    trial.set_constraint("max_flops", 0.5)
    trial.set_constraint("max_params", -0.25)
    study.tell(trial, 1.0)
    got = oi.constraints_from_system_attrs(study.trials[0].system_attrs)
    assert got == {"max_flops": 0.5, "max_params": -0.25}
    assert oi.constraints_from_system_attrs({"constraints": [0.1, -1.0]}) == {"0": 0.1, "1": -1.0}  # the old format


def test_ray_optuna_search_internals():
    pytest.importorskip("ray.tune.search.optuna")
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    def space(trial):
        trial.suggest_int("x", 0, 3)

    s = OptunaSearch(space=space, metric="m", mode="max")
    s.suggest("r1")
    s.suggest("r2")
    assert oi.searcher_trial(s, "r1") is not None and oi.searcher_trial(s, "nope") is None
    assert [rid for rid, _ in oi.searcher_pending(s)] == ["r1", "r2"]
    oi.searcher_tell(s, "r1", [0.5], TrialState.COMPLETE)
    assert oi.searcher_told(s, "r1") and not oi.searcher_told(s, "r2")
    assert [rid for rid, _ in oi.searcher_pending(s)] == ["r2"]
    oi.searcher_tell(s, "r2", None, TrialState.FAIL)
    states = [t.state for t in oi.searcher_trial(s, "r1").study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]


def test_a_missing_private_name_is_reported_loudly():
    class NoId:
        pass

    with pytest.raises(oi.OptunaInternalsChanged, match="Trial._trial_id.*nas.optuna_internals"):
        oi.trial_id(NoId())


def test_no_other_module_touches_optuna_private_api():
    pattern = re.compile(r"optuna\.\w+\._|optuna\.storages\._rdb|_create_scoped_session|_without_commit|"
                         r"_cached_frozen_trial|\._trial_id\b|\._ot_trials|\._ot_study|\._completed_trials|"
                         r"_constrained_optimization|\bstudy\._storage\b")
    offenders = []
    for folder in ("nas", "evaluators", "search_space", "operators", "benchmarks"):
        for p in (ROOT / folder).rglob("*.py"):
            if p.name == "optuna_internals.py":
                continue
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
