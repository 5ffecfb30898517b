"""``nas export`` against a real study store (Optuna RDB storage over SQLite), in process.

The store is built with optuna directly, its trials carrying the attributes of ``nas.attrs``
(the store format the search writes). Fresh-process round trips live in test_export_roundtrip.py.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import optuna
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from nas import attrs
from nas.cli import main
from search_space import ArchSpec, StageSpec, StemSpec, build_model

STUDY = "exp_small"


def tiny(dim: int, depth: int = 1, mixer: str = "attention") -> ArchSpec:
    knobs = {"num_heads": 2} if mixer == "attention" else {}
    return ArchSpec(StemSpec("patchify", 8), (StageSpec(depth, dim, mixer, knobs, pos="abs"),), num_classes=10,
                    img_size=32)


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    path = tmp_path / "exports.json"
    monkeypatch.setenv("ATTNNAS_EXPORTS", str(path))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A two-objective study: trials 0-2 on the front, 3 failed, 4 dominated, 5 pruned; trial 1
    has stored weights (a path relative to the store). Read-only for the tests."""
    db = tmp_path_factory.mktemp("store") / "studies" / f"{STUDY}.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=url, directions=["maximize", "minimize"])
    study.set_user_attr(attrs.STUDY_OBJECTIVES, [{"name": "accuracy", "direction": "maximize"},
                                                 {"name": "flops", "direction": "minimize"}])
    rows = [(tiny(16), 0.5, 1_000_000), (tiny(32), 0.7, 3_000_000), (tiny(64, 2), 0.8, 9_000_000),
            (tiny(48), None, None), (tiny(64), 0.4, 9_500_000), (tiny(24), None, None)]
    specs = {}
    for i, (spec, acc, flops) in enumerate(rows):
        t = study.ask()
        ua = {attrs.GENOME: spec.to_json(), attrs.ARCH_ID: spec.arch_id, attrs.SUMMARY: spec.summary(),
              attrs.PARAMS: 1000 * (i + 1), attrs.LATENCY_MS: 1.5 + i, attrs.LATENCY_SPREAD_MS: 0.1,
              attrs.LATENCY_DEVICE: "cpu: test machine (1 thread)",
              attrs.LATENCY_SETTING: {"batch": 1, "dtype": "float32", "img_size": 32},
              attrs.EPOCHS: 3, attrs.EPOCH_BUDGET: 3, attrs.FEASIBLE: True, attrs.CODE_VERSION: "0.1.0+test"}
        if flops is not None:
            ua.update({attrs.FLOPS: flops, attrs.ACCURACY: acc, attrs.FLOPS_PER_STAGE: [flops - 1000]})
        if i == 1:
            weights = db.parent / "weights" / "trial1.safetensors"
            weights.parent.mkdir()
            save_file(build_model(spec).state_dict(), str(weights))
            ua[attrs.WEIGHTS] = "weights/trial1.safetensors"
        if i == 3:
            ua[attrs.FAILURE] = "RuntimeError: out of memory"
        for k, v in ua.items():
            t.set_user_attr(k, v)
        if i == 3:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        elif i == 5:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, [acc, flops])
        specs[i] = spec
    return url, db, specs


def nas(*args: str) -> int:
    return main(["export", *map(str, args)])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_best_without_a_rule_lists_the_front_and_asks(store, tmp_path, capsys):
    url, _, _ = store
    out = tmp_path / "out"
    assert nas(STUDY, "--storage", url, "--trial", "best", "--out", out) == 2
    captured = capsys.readouterr()
    rows = [ln.split()[0] for ln in captured.out.splitlines() if ln[:1].isdigit()]
    assert rows == ["2", "1", "0"]  # the front (best accuracy first); failed, dominated, pruned left out
    assert "--trial N" in captured.out and "--best-by" in captured.err
    assert nas(STUDY, "--storage", url, "--out", out) == 2  # no --trial at all: the same listing
    assert [ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln[:1].isdigit()] == rows
    assert not out.exists()


def test_best_by_accuracy_under_a_flop_cap(store, tmp_path, capsys, registry):
    url, _, specs = store
    out = tmp_path / "best"
    assert nas(STUDY, "--storage", url, "--trial", "best", "--best-by", "accuracy", "--max-flops", "5M",
               "--out", out) == 0
    assert "trial 1" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert ArchSpec.from_dict(cfg["model_args"]["genome"]) == specs[1]
    assert cfg["architecture"] == "attnnas" and cfg["num_classes"] == 10
    pc = cfg["pretrained_cfg"]
    assert pc["input_size"] == [3, 32, 32] and pc["first_conv"] == "stem.proj" and pc["classifier"] == "head.fc"
    assert len(pc["mean"]) == 3 and len(pc["std"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "attnnas_exp_small_t1_model.py", "config.json"]
    card = (out / "README.md").read_text()
    for text in ("exp_small", "trial 1", "cpu: test machine", "70.00%", "3 M", "attention", "| 0 |",
                 "local-dir:", "attnnas_exp_small_t1_model"):
        assert text in card, text
    # the lowest-FLOPs rule and a cap nothing meets
    assert nas(STUDY, "--storage", url, "--trial", "best", "--best-by", "flops", "--out", tmp_path / "b2") == 0
    assert ArchSpec.from_dict(json.loads((tmp_path / "b2" / "config.json").read_text())["model_args"]["genome"]) \
        == specs[0]
    assert nas(STUDY, "--storage", url, "--trial", "best", "--best-by", "accuracy", "--max-flops", "10k",
               "--out", tmp_path / "b3") == 2
    assert "no member of the front" in one_line_error(capsys)
    assert json.loads(registry.read_text())["exports"].keys() == {"attnnas_exp_small_t1", "attnnas_exp_small_t0"}


def test_stored_weights_export_and_load(store, tmp_path):
    url, db, specs = store
    out = tmp_path / "w"
    assert nas(STUDY, "--storage", url, "--trial", "1", "--weights", "--out", out, "--name", "mynet") == 0
    stored = load_file(str(db.parent / "weights" / "trial1.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    assert stored.keys() == exported.keys() and all(torch.equal(stored[k], exported[k]) for k in stored)
    ref = build_model(specs[1]).eval()
    ref.load_state_dict(stored)
    x = torch.randn(2, 3, 32, 32)
    m = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    by_name = timm.create_model("mynet", pretrained=True).eval()  # registered in this process by the export
    with torch.no_grad():
        assert (m(x) - ref(x)).abs().max() <= 1e-6
        assert (by_name(x) - ref(x)).abs().max() <= 1e-6
    assert "proxy-trained weights of trial 1" in (out / "README.md").read_text()


def test_export_without_weights_refuses_pretrained(store, tmp_path):
    url, _, _ = store
    out = tmp_path / "nw"
    assert nas(STUDY, "--storage", url, "--trial", "2", "--out", out) == 0
    assert timm.create_model(f"local-dir:{out}", pretrained=False)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="holds no weights"):
        timm.create_model(f"local-dir:{out}", pretrained=True)
    with pytest.raises(ValueError, match="has no weights"):
        timm.create_model("attnnas_exp_small_t2", pretrained=True)


@pytest.mark.parametrize("case", ["failed", "pruned", "missing_trial", "missing_study", "no_stored_weights",
                                  "weights_do_not_fit", "existing_dir", "timm_name", "bad_trial"])
def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path, capsys, case):
    url, db, _ = store
    out = tmp_path / "exports" / "m"
    out.parent.mkdir()
    base = [STUDY, "--storage", url, "--out", out]
    args, expect = {
        "failed": (["--trial", "3"], "trial 3 of 'exp_small' is fail: RuntimeError: out of memory"),
        "pruned": (["--trial", "5"], "is pruned"),
        "missing_trial": (["--trial", "99"], "has no trial 99 (trials 0..5)"),
        "missing_study": (["--trial", "0"], "no study 'nope'"),
        "no_stored_weights": (["--trial", "0", "--weights"], "trial 0 has no stored weights"),
        "weights_do_not_fit": (["--trial", "0", "--weights", db.parent / "weights" / "trial1.safetensors"],
                               "do not fit the genome: 18 shape mismatch(es), e.g. stem.proj.weight"),
        "existing_dir": (["--trial", "0"], "already exists; pass --force"),
        "timm_name": (["--trial", "0", "--name", "resnet18"], "already a timm model"),
        "bad_trial": (["--trial", "first"], "--trial must be a number or 'best'"),
    }[case]
    if case == "missing_study":
        base[0] = "nope"
    if case == "existing_dir":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    assert nas(*base, *args) == 2
    assert expect in one_line_error(capsys)
    if case == "existing_dir":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert leftovers(out.parent) == []


def test_force_replaces_an_existing_folder(store, tmp_path):
    url, _, specs = store
    out = tmp_path / "f"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert nas(STUDY, "--storage", url, "--trial", "0", "--out", out, "--force") == 0
    assert not (out / "old.txt").exists() and (out / "config.json").exists()
    assert leftovers(tmp_path) == []


def test_genome_file_and_explicit_state_dict(tmp_path, capsys):
    spec = tiny(32, mixer="pool")
    (tmp_path / "g.json").write_text(spec.to_json(indent=2))
    sd = build_model(spec).state_dict()
    torch.save(sd, tmp_path / "w.pth")
    out = tmp_path / "g"
    assert main(["export", str(tmp_path / "g.json"), "--out", str(out), "--weights", str(tmp_path / "w.pth"),
                 "--name", "poolnet"]) == 0
    exported = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in sd.items())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["attnnas"]["study"] is None and cfg["attnnas"]["name"] == "poolnet"


def test_standalone_holds_only_the_genome_operators_and_imports_only_torch_timm(tmp_path):
    import sys

    from nas.export import export_genome

    spec = ArchSpec(StemSpec("patchify", 4, {"norm": True}), (
        StageSpec(1, 32, "window", {"num_heads": 2, "window_size": 4}, pos="rel_bias"),
        StageSpec(1, 64, "sra", {"num_heads": 2, "sr_ratio": 2}, mlp="convffn", downsample="patch_merging"),
    ), num_classes=10, img_size=32)
    out = export_genome(spec, tmp_path / "s", name="mixnet", register=False)
    text = (out / "mixnet_model.py").read_text()
    tree = ast.parse(text)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"WindowAttention", "SpatialReductionAttention", "RelPosBias", "PatchMerging", "ConvFFN",
            "PatchifyStem", "NasNet", "UnifiedBlock"} <= classes
    for unused in ("GlobalAttention", "LinearSpatialReductionAttention", "Pooling", "SepConv", "OverlapStem",
                   "ConvStem", "LearnedAbsPosEncoding", "ConditionalPosEncoding", "ConvDownsample", "GluFFN"):
        assert unused not in classes, unused
    tops = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            tops |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            tops.add((n.module or "").split(".")[0])
    assert tops - set(sys.stdlib_module_names) == {"torch", "timm"}
    assert "def mixnet(" in text and "@register_model" in text


def zoo_genomes() -> dict[str, ArchSpec]:
    """One small genome per registered operator (mixers, position encodings, stems, downsamplers,
    channel MLPs, channel attention): what the search space can produce, the bundler must follow."""
    from operators import CHANNEL_ATTNS, CHANNEL_MLPS, DOWNSAMPLERS, MIXERS, POS_ENCODINGS, STEMS

    def two_stage(mixer: str, pos: str = "none", **stage) -> ArchSpec:
        knobs = {"num_heads": 2} if "num_heads" in MIXERS.get(mixer).knobs() else {}
        for img in (32, 64):  # the smallest input the mixer's default knobs accept
            spec = ArchSpec(StemSpec("patchify", 4), (StageSpec(1, 16, mixer, knobs, pos=pos, **stage),
                                                      StageSpec(1, 32, mixer, knobs, pos=pos, downsample="conv")),
                            num_classes=10, img_size=img)
            try:
                return spec.validate()
            except ValueError:
                pass
        return spec

    out = {f"mixer {m}": two_stage(m) for m in MIXERS.names()}
    for pos in POS_ENCODINGS.names():
        if POS_ENCODINGS.get(pos).placement == "grid":
            out[f"pos {pos}"] = two_stage("pool", pos)
        else:
            mixer = next(m for m in MIXERS.names() if pos in MIXERS.get(m).supported_pos)
            out[f"pos {pos}"] = two_stage(mixer, pos)
    for kind in STEMS.names():
        patch = 16 if kind == "t2t" else 4  # t2t builds its token transformers only past patch 4
        out[f"stem {kind}"] = ArchSpec(StemSpec(kind, patch), (StageSpec(1, 16, "pool"),), num_classes=10, img_size=32)
    for d in DOWNSAMPLERS.names():
        out[f"downsample {d}"] = ArchSpec(StemSpec("patchify", 4), (StageSpec(1, 16, "pool"),
                                          StageSpec(1, 32, "pool", downsample=d)), num_classes=10, img_size=32)
    for mlp in CHANNEL_MLPS.names():
        out[f"mlp {mlp}"] = two_stage("pool", mlp=mlp)
    for ca in CHANNEL_ATTNS.names():
        out[f"channel_attn {ca}"] = two_stage("pool", channel_attn=ca)
    return out


def test_every_registered_operator_bundles_and_self_checks():
    """The standalone file is generated (and its model matches the package's) for every operator."""
    from nas._standalone import standalone_source
    from nas.export import _self_check

    failures = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a shared machine
    for label, spec in zoo_genomes().items():
        try:
            spec.validate()
            model = build_model(spec).eval()
            _self_check(standalone_source(spec, "zoo_model", model=model), spec, model)
        except Exception as e:  # noqa: BLE001 - collect every failure, report them together
            failures.append(f"{label}: {type(e).__name__}: {str(e)[:200]}")
    torch.set_num_threads(threads)
    assert not failures, "\n".join(failures)


def test_search_saves_proxy_trained_weights_and_export_uses_them(tmp_path):
    """End to end: ``save_weights = true`` in the study -> weights beside the store -> ``--weights``."""
    import optuna

    from nas.backends.optuna_backend import run_worker
    from nas.commands.search import prepare
    from nas.study import parse_study
    from nas.testing import tiny_study_text

    url = f"sqlite:///{tmp_path / 'w.db'}"
    text = tiny_study_text("wsave", url, trials=3, kind="proxy", epochs=1)
    spec = parse_study(text.replace("batch_size = 32", "batch_size = 32\nsave_weights = true"), "<wsave>")
    assert spec.evaluator.save_weights
    prepare(spec, heartbeat_s=None)
    run_worker(spec, 3)
    trained = [t for t in optuna.load_study(study_name="wsave", storage=url).trials
               if t.state.name == "COMPLETE" and t.user_attrs.get(attrs.WEIGHTS)]
    assert trained, "no trial recorded its weights"
    t = trained[0]
    path = t.user_attrs[attrs.WEIGHTS]
    assert path.startswith(str(tmp_path / "wsave_weights")) and path.endswith(f"{t.user_attrs[attrs.ARCH_ID]}.safetensors")
    out = tmp_path / "exp"
    assert nas("wsave", "--storage", url, "--trial", str(t.number), "--weights", "--out", out, "--name", "wsave_net") == 0
    stored, exported = load_file(path), load_file(str(out / "model.safetensors"))
    assert stored.keys() == exported.keys() and all(torch.equal(stored[k], exported[k]) for k in stored)
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ref = build_model(ArchSpec.from_json(t.user_attrs[attrs.GENOME])).eval()
    ref.load_state_dict(stored)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() <= 1e-6
