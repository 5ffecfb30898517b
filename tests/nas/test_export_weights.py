"""Weights of exports and searches: tied parameters (saved once, loaded tied) and every way timm
documents for giving a registered model a local weights file. Loads run in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nas import attrs
from nas.cli import main
from search_space import ArchSpec, StageSpec, StemSpec, build_model

ROOT = Path(__file__).resolve().parents[2]
PROJ_K, PROJ_V = "stages.0.blocks.0.mixer.proj_k.weight", "stages.0.blocks.0.mixer.proj_v.weight"


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    path = tmp_path / "exports.json"
    monkeypatch.setenv("ATTNNAS_EXPORTS", str(path))
    return path


def tied_spec() -> ArchSpec:
    knobs = {"num_heads": 2, "proj_len": 4, "share_kv": True}
    return ArchSpec(StemSpec("patchify", 4), (StageSpec(1, 16, "linformer", knobs),), num_classes=5, img_size=16)


def plain_spec() -> ArchSpec:
    return ArchSpec(StemSpec("patchify", 8), (StageSpec(1, 16, "attention", {"num_heads": 2}),), num_classes=5,
                    img_size=32)


def _fresh(code: str, registry: Path, cwd: Path | None = None, isolated: bool = False) -> dict:
    """Run ``code`` in a new interpreter; it prints ``REPORT <json>``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["ATTNNAS_EXPORTS"] = str(registry)
    if isolated:  # without the project on the path (the standalone file's case)
        import sysconfig

        code = f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r})\n" + code
        cmd = [sys.executable, "-I", "-S", "-c", code]
    else:
        env["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-c", code]
    res = subprocess.run(cmd, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("REPORT ")][-1][len("REPORT "):])


def _reference(model: torch.nn.Module, path: Path, in_size: int) -> None:
    x = torch.randn(2, 3, in_size, in_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.save({"x": x, "logits": model.eval()(x)}, path)


CHECK = r'''
import json, torch
def check(m, ref_path, tied=True):
    r = torch.load(ref_path)
    m = m.eval()
    with torch.no_grad():
        out = {"diff": (m(r["x"]) - r["logits"]).abs().max().item()}
    if tied:
        mx = m.stages[0].blocks[0].mixer
        out["tied"] = mx.proj_k.weight.data_ptr() == mx.proj_v.weight.data_ptr()
        with torch.no_grad():
            mx.proj_k.weight.add_(1.0)  # a change through one name shows through the other
        out["still_tied"] = bool(torch.equal(mx.proj_k.weight, mx.proj_v.weight))
    return out
'''


def test_tied_weights_export_and_load_back_tied(tmp_path, registry):
    """Linformer with share_kv: ``nas export --weights FILE`` writes proj_k once, and every loader
    (local-dir, by name, the standalone file, load_state_dict_for) gives back the same outputs
    with proj_v still the same tensor as proj_k."""
    from nas.export import load_state_dict_for, save_weights

    spec = tied_spec()
    torch.manual_seed(0)
    model = build_model(spec).eval()
    assert model.stages[0].blocks[0].mixer.proj_v is model.stages[0].blocks[0].mixer.proj_k
    ckpt = save_weights(model, tmp_path / "trained.safetensors")
    with safe_open(str(ckpt), "pt") as f:
        assert PROJ_K in f.keys() and PROJ_V not in f.keys()
        assert f.metadata()[PROJ_V] == PROJ_K
    genome = tmp_path / "g.json"
    genome.write_text(spec.to_json())
    out = tmp_path / "exp"
    assert main(["export", str(genome), "--weights", str(ckpt), "--out", str(out), "--name", "tied_net"]) == 0
    ref = tmp_path / "ref.pt"
    _reference(model, ref, 16)

    again = build_model(spec)
    load_state_dict_for(again, out / "model.safetensors")
    mx = again.stages[0].blocks[0].mixer
    assert mx.proj_k.weight.data_ptr() == mx.proj_v.weight.data_ptr()

    report = _fresh(CHECK + f'''
import timm, nas.export
nas.export.register_exports()
print("REPORT " + json.dumps({{
    "local_dir": check(timm.create_model("local-dir:{out}", pretrained=True), {str(ref)!r}),
    "by_name": check(timm.create_model("tied_net", pretrained=True), {str(ref)!r}),
    "checkpoint_path": check(timm.create_model("attnnas", genome={spec.to_json()!r},
                                               checkpoint_path={str(ckpt)!r}), {str(ref)!r}),
}}))
''', registry)
    for how, r in report.items():
        assert r == {"diff": 0.0, "tied": True, "still_tied": True}, (how, r)

    standalone = _fresh(CHECK + f'''
import sys, timm
sys.path.insert(0, {str(out)!r})
import tied_net_model
print("REPORT " + json.dumps(check(timm.create_model("tied_net", pretrained=True), {str(ref)!r})))
''', registry, cwd=tmp_path, isolated=True)
    assert standalone == {"diff": 0.0, "tied": True, "still_tied": True}


def test_search_with_save_weights_keeps_a_tied_candidate(tmp_path, registry):
    """A study whose candidates tie weights (share_kv) with ``save_weights = true``: the trial
    completes with its weights saved, and ``nas export --weights`` loads them back tied."""
    import optuna

    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare
    from nas.study import parse_study

    url = f"sqlite:///{tmp_path / 'tied.db'}"
    text = f"""
[study]
name = "tiedsave"
storage = "{url}"
sampler = "random"
trials = 1

[data]
dataset = "digits"
img_size = 16
subset = 64

[space]
shapes = ["isotropic"]
stems = [{{ kind = "patchify", patch_size = [4] }}]
iso_depth = [1, 1]
width = {{ low = 16, high = 16 }}
mlp_ratio = [2.0]

[space.mixers.linformer]
num_heads = [2]
proj_len = [4]
share_kv = [true]

[evaluator]
kind = "proxy"
epochs = 1
batch_size = 32
save_weights = true
"""
    spec = parse_study(text, "<tiedsave>")
    prepare(spec, heartbeat_s=None)
    run_worker(spec, 1)
    (t,) = optuna.load_study(study_name="tiedsave", storage=url).trials
    assert t.state.name == "COMPLETE", t.user_attrs.get(attrs.FAILURE)
    genome = ArchSpec.from_json(t.user_attrs[attrs.GENOME])
    assert genome.stages[0].knob_dict["share_kv"] is True
    stored = Path(t.user_attrs[attrs.WEIGHTS])
    with safe_open(str(stored), "pt") as f:
        assert PROJ_K in f.keys() and PROJ_V not in f.keys()
    out = tmp_path / "exp"
    assert main(["export", "tiedsave", "--storage", url, "--trial", str(t.number), "--weights", "--out", str(out),
                 "--name", "tiedsave_net"]) == 0
    from nas.export import load_state_dict_for

    ref_model = build_model(genome)
    load_state_dict_for(ref_model, stored)
    ref = tmp_path / "ref.pt"
    _reference(ref_model, ref, 16)
    report = _fresh(CHECK + f'''
import timm, nas
print("REPORT " + json.dumps(check(timm.create_model("local-dir:{out}", pretrained=True), {str(ref)!r})))
''', registry)
    assert report == {"diff": 0.0, "tied": True, "still_tied": True}


def test_every_timm_way_of_giving_local_weights_to_an_export(tmp_path, registry):
    """An export made without weights takes a weights file through each way timm documents:
    ``pretrained_cfg_overlay=dict(file=...)`` (by name, local-dir, standalone file),
    ``checkpoint_path=...`` (by name, local-dir, standalone file) and a checkpoint put into the
    folder (local-dir, pretrained=True). Each gives the trained model's outputs exactly."""
    from nas.export import export_genome, save_weights

    spec = plain_spec()
    torch.manual_seed(0)
    trained = build_model(spec).eval()
    w = save_weights(trained, tmp_path / "w.safetensors")
    ref = tmp_path / "ref.pt"
    _reference(trained, ref, 32)
    out = export_genome(spec, tmp_path / "bare", name="bare_net")
    assert not (out / "model.safetensors").exists()
    folder = export_genome(spec, tmp_path / "filled", name="filled_net", register=False)
    (folder / "model.safetensors").write_bytes(w.read_bytes())  # the user's own checkpoint, dropped in

    report = _fresh(CHECK + f'''
import timm, nas.export
nas.export.register_exports()
overlay = dict(file={str(w)!r})
refused = []
for how in ("by_name", "local_dir"):
    src = "bare_net" if how == "by_name" else "local-dir:{out}"
    try:
        timm.create_model(src, pretrained=True)
    except (ValueError, RuntimeError) as e:
        refused.append(how)
print("REPORT " + json.dumps({{
    "overlay_by_name": check(timm.create_model("bare_net", pretrained=True, pretrained_cfg_overlay=overlay),
                             {str(ref)!r}, tied=False),
    "overlay_local_dir": check(timm.create_model("local-dir:{out}", pretrained=True,
                                                 pretrained_cfg_overlay=overlay), {str(ref)!r}, tied=False),
    "checkpoint_by_name": check(timm.create_model("bare_net", checkpoint_path={str(w)!r}), {str(ref)!r},
                                tied=False),
    "checkpoint_local_dir": check(timm.create_model("local-dir:{out}", checkpoint_path={str(w)!r}),
                                  {str(ref)!r}, tied=False),
    "folder": check(timm.create_model("local-dir:{folder}", pretrained=True), {str(ref)!r}, tied=False),
    "refused_without_weights": refused,
}}))
''', registry)
    assert report.pop("refused_without_weights") == ["by_name", "local_dir"]
    for how, r in report.items():
        assert r == {"diff": 0.0}, (how, r)

    standalone = _fresh(CHECK + f'''
import sys, timm
sys.path.insert(0, {str(out)!r})
import bare_net_model
print("REPORT " + json.dumps({{
    "overlay": check(timm.create_model("bare_net", pretrained=True, pretrained_cfg_overlay=dict(file={str(w)!r})),
                     {str(ref)!r}, tied=False),
    "checkpoint": check(timm.create_model("bare_net", checkpoint_path={str(w)!r}), {str(ref)!r}, tied=False),
}}))
''', registry, cwd=tmp_path, isolated=True)
    assert standalone == {"overlay": {"diff": 0.0}, "checkpoint": {"diff": 0.0}}
