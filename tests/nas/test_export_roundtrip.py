"""Round trips of ``nas export`` in fresh processes: the package path and the standalone file.

One module-scoped export of four small genomes (deit-like, swin-like, caformer-like hybrid,
pvt-like) with random weights; their reference outputs are saved, then two subprocesses (one
with this package, one where it cannot be imported) reload every export and report back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from search_space import ArchSpec, HeadSpec, StageSpec, StemSpec, build_model

TOL = 1e-6


def small_genomes() -> dict[str, ArchSpec]:
    """Four families: mixers, position encodings, stems, downsamplers and heads all vary."""
    return {
        # DeiT-like: patchify stem, global attention, learned absolute positions, class-token head
        "deit": ArchSpec(StemSpec("patchify", 8), (StageSpec(2, 48, "attention", {"num_heads": 3}, pos="abs"),),
                         HeadSpec("cls"), num_classes=10, img_size=32),
        # Swin-like: normed patchify stem, shifted windows + relative bias, patch merging
        "swin": ArchSpec(StemSpec("patchify", 4, {"norm": True}), (
            StageSpec(2, 32, "window", {"num_heads": 2, "window_size": 4}, pos="rel_bias"),
            StageSpec(2, 64, "window", {"num_heads": 4, "window_size": 4}, pos="rel_bias", downsample="patch_merging"),
        ), num_classes=10, img_size=64),
        # CAFormer-like hybrid: overlapping stem, sepconv then attention, GLU, LayerScale, MLP head
        "caformer": ArchSpec(StemSpec("overlap", 4, {"kernel_size": 7}), (
            StageSpec(1, 32, "sepconv", layer_scale=1e-5),
            StageSpec(2, 64, "attention", {"num_heads": 2, "qkv_bias": False, "proj_bias": False},
                      downsample="conv", mlp="glu"),
        ), HeadSpec("avg", mlp_ratio=2.0), num_classes=10, img_size=32),
        # PVT-like: spatial-reduction attention + ConvFFN, CPE, linear SRA, pooling, sin-cos
        "pvt": ArchSpec(StemSpec("overlap", 4, {"kernel_size": 7}), (
            StageSpec(1, 32, "sra", {"num_heads": 1, "sr_ratio": 4}, pos="cpe", mlp="convffn"),
            StageSpec(1, 64, "sra_linear", {"num_heads": 2, "pool_size": 2}, mlp="convffn", downsample="conv"),
            StageSpec(1, 64, "pool", downsample="pool", pos="sincos"),
        ), num_classes=10, img_size=64),
    }


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export every genome with random weights; save inputs and reference outputs."""
    root = tmp_path_factory.mktemp("roundtrip")
    old = os.environ.get("ATTNNAS_EXPORTS")
    os.environ["ATTNNAS_EXPORTS"] = str(root / "registry.json")
    from nas.export import export_genome

    cases = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a shared machine
    try:
        for key, spec in small_genomes().items():
            torch.manual_seed(hash(key) % 1000)
            model = build_model(spec).eval()
            for p in model.parameters():  # move off the init so every weight matters
                p.data.add_(0.02 * torch.randn_like(p))
            x = torch.randn(2, 3, spec.img_size, spec.img_size)
            with torch.no_grad():
                ref = dict(logits=model(x), pre_logits=model.forward_head(model.forward_features(x), pre_logits=True),
                           maps=model.forward_intermediates(x, intermediates_only=True))
            name = f"attnnas_rt_{key}"
            out = export_genome(spec, root / key, name=name, weights=model.state_dict())
            torch.save(dict(x=x, **ref), root / f"{key}_ref.pt")
            cases[key] = dict(dir=str(out), name=name, ref=str(root / f"{key}_ref.pt"),
                              dims=[s.dim for s in spec.stages], num_features=model.num_features,
                              reductions=[f["reduction"] for f in model.feature_info], img_size=spec.img_size)
    finally:
        torch.set_num_threads(threads)
        if old is None:
            os.environ.pop("ATTNNAS_EXPORTS", None)
        else:
            os.environ["ATTNNAS_EXPORTS"] = old
    return root, cases


# The checks each fresh process runs; LOAD(key, case, **kw) builds the model the way the path under test does.
CHECKS = r'''
import json, sys, torch
torch.set_num_threads(1)
cases = json.loads(sys.argv[1])
report = {}

def diff(a, b):
    return (a - b).abs().max().item()

for key, c in cases.items():
    r = {}
    ref = torch.load(c["ref"])
    x = ref["x"]
    m = LOAD(key, c, pretrained=True).eval()
    with torch.no_grad():
        y = m(x)
    r["logits"] = diff(y, ref["logits"])
    r["pretrained_cfg_num_classes"] = m.pretrained_cfg["num_classes"]
    # a new classifier at creation: backbone weights load, the classifier is dropped cleanly
    m3 = LOAD(key, c, pretrained=True, num_classes=3).eval()
    with torch.no_grad():
        r["nc3_shape"] = list(m3(x).shape)
        r["nc3_pre_logits"] = diff(m3.forward_head(m3.forward_features(x), pre_logits=True), ref["pre_logits"])
    m0 = LOAD(key, c, pretrained=True, num_classes=0).eval()
    with torch.no_grad():
        r["nc0"] = diff(m0(x), ref["pre_logits"])
    # reset_classifier on the loaded model
    with torch.no_grad():
        m.reset_classifier(0)
        r["reset0"] = diff(m(x), ref["pre_logits"])
        r["reset0_classifier"] = type(m.get_classifier()).__name__
        m.reset_classifier(5)
        r["reset5_shape"] = list(m(x).shape)
    # features_only: one map per stage with the channels feature_info states
    f = LOAD(key, c, pretrained=True, features_only=True).eval()
    with torch.no_grad():
        maps = f(x)
    r["feat_channels"] = f.feature_info.channels()
    r["feat_reduction"] = f.feature_info.reduction()
    r["feat_shapes"] = [list(t.shape) for t in maps]
    r["feat_diff"] = max(diff(a, b) for a, b in zip(maps, ref["maps"]))
    # torch.export of the loaded model matches eager (every genome in one path, two in the other: time)
    if key in EXPORT_KEYS:
        m = LOAD(key, c, pretrained=True).eval()
        ep = torch.export.export(m, (x,))
        with torch.no_grad():
            r["export"] = diff(ep.module()(x), ref["logits"])
    report[key] = r
EXTRA(report)
print("REPORT" + json.dumps(report))
'''

PACKAGE_PATH = r'''
import timm
import nas.export
nas.export.register_exports()  # registers the recorded exported names (importing reads no file)
EXPORT_KEYS = ("deit", "swin", "caformer", "pvt")

def LOAD(key, c, **kw):
    # the folder for most loads, the exported name for the rest: both must round-trip
    if kw.get("num_classes") in (3,) or kw.get("features_only"):
        return timm.create_model(c["name"], **kw)
    return timm.create_model("local-dir:" + c["dir"], **kw)

def EXTRA(report):
    for key, c in cases.items():
        ref = torch.load(c["ref"])
        m = timm.create_model(c["name"], pretrained=True).eval()
        with torch.no_grad():
            report[key]["by_name"] = diff(m(ref["x"]), ref["logits"])
        report[key]["by_name_fresh"] = list(timm.create_model(c["name"], num_classes=7)(ref["x"]).shape)
'''

STANDALONE = r'''
import importlib, timm
EXPORT_KEYS = ("deit", "swin")

def LOAD(key, c, **kw):
    if c["dir"] not in sys.path:
        sys.path.insert(0, c["dir"])
        importlib.import_module(c["name"] + "_model")  # registers c["name"] with timm
    return timm.create_model(c["name"], **kw)

def EXTRA(report):
    for pkg in ("search_space", "operators", "nas", "evaluators"):
        try:
            importlib.import_module(pkg)
            report["importable_" + pkg] = True
        except ImportError:
            report["importable_" + pkg] = False
    mods = [m.split(".")[0] for m in sys.modules]
    report["foreign_modules"] = sorted({m for m in mods if m in ("search_space", "operators", "nas", "evaluators")})
'''


def _run(script: str, cases: dict, cwd: Path, isolated: bool, registry: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["ATTNNAS_EXPORTS"] = str(registry)
    if isolated:
        # -I: no PYTHONPATH, no user site, no script dir; -S: no site-packages .pth files, so the
        # editable install's finder is not installed; the venv's packages (torch, timm) are added by hand.
        site = sysconfig.get_paths()["purelib"]
        prog = f"import sys; sys.path.append({site!r})\n" + script
        cmd = [sys.executable, "-I", "-S", "-c", prog, json.dumps(cases)]
    else:
        cmd = [sys.executable, "-c", script, json.dumps(cases)]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("REPORT")][-1]
    return json.loads(line[len("REPORT"):])


def _check_common(report: dict, cases: dict) -> None:
    for key, c in cases.items():
        r = report[key]
        assert r["logits"] <= TOL, (key, r)
        assert r["pretrained_cfg_num_classes"] == 10
        assert r["nc3_shape"] == [2, 3] and r["nc3_pre_logits"] <= TOL, (key, r)
        assert r["nc0"] <= TOL and r["reset0"] <= TOL, (key, r)
        assert r["reset0_classifier"] == "Identity"
        assert r["reset5_shape"] == [2, 5]
        assert r["feat_channels"] == c["dims"], (key, r)
        assert [s[1] for s in r["feat_shapes"]] == c["dims"]
        assert r["feat_reduction"] == c["reductions"]
        assert [s[2:] for s in r["feat_shapes"]] == [[c["img_size"] // red] * 2 for red in c["reductions"]]
        assert r["feat_diff"] <= TOL, (key, r)
        assert r.get("export", 0.0) <= TOL, (key, r)


def test_package_path_roundtrip(exports):
    root, cases = exports
    report = _run(PACKAGE_PATH + CHECKS, cases, root, False, root / "registry.json")
    _check_common(report, cases)
    assert all("export" in report[key] for key in cases)
    for key in cases:
        assert report[key]["by_name"] <= TOL
        assert report[key]["by_name_fresh"] == [2, 7]


def test_standalone_file_roundtrip_without_the_package(exports):
    root, cases = exports
    workdir = root / "elsewhere"
    workdir.mkdir(exist_ok=True)
    report = _run(STANDALONE + CHECKS, cases, workdir, True, root / "no-registry.json")
    assert not any(report[f"importable_{p}"] for p in ("search_space", "operators", "nas", "evaluators")), report
    assert report["foreign_modules"] == []
    _check_common(report, cases)
