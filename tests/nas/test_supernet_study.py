from __future__ import annotations

import io
import random

import pytest
import torch

from nas import attrs
from nas.space import SearchSpace
from nas.study import parse_study
from nas.testing import tiny_study_text


def supernet_study(tmp_path, name: str, trials: int = 6):
    text = tiny_study_text(name, f"sqlite:///{tmp_path}/s.db", trials=trials, kind="supernet", epochs=1)
    text = text.replace('kind = "supernet"', 'kind = "supernet"\nsave_weights = true')
    text += "\n[evaluator.supernet]\nsteps = 12\nconfirm_top = 2\n"
    return parse_study(text, f"<{name}>")


def test_the_study_schema_takes_the_supernet_kind_and_its_table(tmp_path):
    spec = supernet_study(tmp_path, "sn_schema")
    assert spec.evaluator.kind == "supernet"
    assert spec.evaluator.supernet.steps == 12 and spec.evaluator.supernet.confirm_top == 2
    bad = tiny_study_text("x", kind="supernet") + "\n[evaluator.supernet]\nstrategy = \"greedy\"\n"
    with pytest.raises(Exception, match="strategy"):
        parse_study(bad, "<x>")


def test_sampled_genomes_of_a_study_space_all_map_to_paths(tmp_path):
    from evaluators.supernet import WeightBank
    from nas.supernet import supernet_space

    space = SearchSpace(supernet_study(tmp_path, "sn_map"))
    bank = WeightBank(supernet_space(space))
    rng = random.Random(0)
    seen = {}
    while len(seen) < 60:
        g = space.sample(rng)
        seen[g.arch_id] = g
    x = torch.randn(2, 3, 16, 16)
    bank.eval()
    for n, g in enumerate(seen.values()):
        plan = bank.plan(g)
        assert set(plan.params) == {k for k, _ in plan.model.named_parameters()}
        if n % 6 == 0:
            with torch.no_grad():
                torch.testing.assert_close(bank.extract(g).eval()(x), bank.forward_path(g, x), rtol=0, atol=1e-6)


def test_a_supernet_study_runs_both_stages_and_exports_inherited_weights(tmp_path, monkeypatch):
    from evaluators.supernet import WeightBank, load_bank
    from nas.commands.front import front_report, print_front
    from nas.commands.search import search
    from nas.export.trials import export_trial
    from nas.export.weights import load_state_dict_for
    from nas.supernet import SUPERNET_FILE, supernet_dir, supernet_space
    from search_space import ArchSpec, build_model

    monkeypatch.setenv("ATTNNAS_EXPORTS", str(tmp_path / "exports.json"))
    spec = supernet_study(tmp_path, "sn_e2e")
    out = io.StringIO()
    assert search(spec, show_progress=False, out=out) == 0
    assert (supernet_dir(spec) / SUPERNET_FILE).exists()

    rep = front_report(spec.name, spec.storage)
    searched = [r for r in rep["records"] if r.complete and r.stage == "search" and r.accuracy is not None
                and r.feasible is not False]
    assert searched and all(r.user_attrs[attrs.SUPERNET_ACCURACY] == r.accuracy for r in searched)
    assert all(r.train_time_s < 60 and r.epochs == 0 for r in searched)
    confirmed = [r for r in rep["records"] if r.stage == "confirmed"]
    assert 1 <= len(confirmed) <= 2
    by_number = {r.number: r for r in rep["records"]}
    for c in confirmed:
        src = by_number[c.user_attrs[attrs.CONFIRMS]]
        assert src.arch_id == c.arch_id and src.stage == "search"
        assert c.user_attrs[attrs.SUPERNET_ACCURACY] == src.accuracy
        assert c.epochs == 1 and c.epoch_budget == 1  # trained stand-alone with the proxy recipe
    assert rep["front"] and all(r.stage == "search" for r in rep["front"])
    assert rep["confirmed_front"] and all(r.stage == "confirmed" for r in rep["confirmed_front"])
    assert rep["supernet"]["steps"] == 12 and rep["supernet"]["train_time_s"] > 0
    text = io.StringIO()
    print_front(rep, spec.name, out=text)
    assert "scored by the supernet" in text.getvalue() and "Confirmed front" in text.getvalue()

    # the dashboard tells the two fronts apart
    from nas.dashboard.views import trial_rows

    cats = {row["number"]: row["category"] for row in trial_rows(rep["records"], rep["objectives"],
                                                                 {r.number for r in rep["front"]})}
    assert all(cats[r.number] == "front" for r in rep["front"])
    assert all(cats[r.number] == "confirmed" for r in rep["confirmed_front"])
    assert {cats[c.number] for c in confirmed} <= {"confirmed", "confirmed_dominated"}

    # a second search run does not confirm the same genomes again
    search(spec.replace(trials=len(rep["records"])), show_progress=False, out=io.StringIO())
    again = front_report(spec.name, spec.storage)
    assert len([r for r in again["records"] if r.stage == "confirmed"]) == len(confirmed)

    # the inherited weights export like a trial's and reload with identical outputs
    member = rep["front"][0]
    genome = ArchSpec.from_json(member.genome)
    folder, _ = export_trial(spec.name, tmp_path / "export", storage=spec.storage, trial=member.number, weights=True)
    model = build_model(genome)
    load_state_dict_for(model, next(folder.glob("*.safetensors")))
    bank = load_bank(WeightBank(supernet_space(SearchSpace(spec))), supernet_dir(spec) / SUPERNET_FILE)
    x = torch.randn(3, 3, 16, 16)
    bank.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), bank.forward_path(genome, x), rtol=0, atol=1e-6)
