"""``nas profile`` and ``nas latency`` through the CLI: the three target kinds and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nas.cli import main
from search_space import PRESETS


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_preset_json(capsys):
    code, out, err = _run(["profile", "preset:deit_tiny", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["target"] == "preset:deit_tiny" and d["img_size"] == 224
    assert 1.20e9 < d["flops"] < 1.30e9 and d["params"] == pytest.approx(5.72e6, rel=0.01)
    assert d["uncounted_ops"] == {}
    assert sum(r["flops"] for r in d["by_stage"]) == d["flops"]
    assert [r["part"] for r in d["by_stage"]] == ["stem", "stages.0", "head"]


def test_timm_table_and_img_size(capsys):
    code, out, err = _run(["profile", "timm:levit_128s"], capsys)
    assert code == 0, err
    assert "total" in out and "uncounted ops: none" in out
    code, out, _ = _run(["profile", "timm:deit_tiny_patch16_224", "--img-size", "160", "--json"], capsys)
    d = json.loads(out)
    assert d["img_size"] == 160 and d["flops"] < 1.0e9  # fewer tokens than at 224


def test_genome_file_with_latency(tmp_path, capsys):
    spec = PRESETS["pvt_v2_b0"].replace(img_size=64, num_classes=10)
    path = tmp_path / "g.json"
    path.write_text(spec.to_json(indent=2))
    code, out, err = _run(["profile", str(path), "--latency", "--repeats", "3", "--train-memory", "4", "--json"],
                          capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["arch_id"] == spec.arch_id and d["latency_ms"] > 0
    assert all(r["latency_ms"] > 0 for r in d["by_stage"])
    assert d["latency"]["device"] == "cpu" and d["latency"]["threads"] == 1
    assert d["train_memory"]["batch"] == 4 and d["train_memory"]["peak_bytes"] > 0
    code, out, _ = _run(["profile", str(path), "--latency", "--repeats", "3"], capsys)
    assert code == 0 and "latency ms" in out and "median" in out


@pytest.mark.parametrize("argv, message", [
    (["profile", "timm:deit_tiny_pach16_224"], "unknown timm model 'deit_tiny_pach16_224'; did you mean deit_tiny_patch16_224"),
    (["profile", "timm:levit_128s", "--img-size", "100"], "layer 'stages.0.blocks.0.attn' (Attention)"),
    (["profile", "preset:swin_tiny", "--img-size", "100"], "not divisible by the total stride 32"),
    (["profile", "preset:deit_tiyn"], "did you mean 'deit_tiny'"),
    (["profile", "missing_genome.json"], "neither preset:NAME, timm:MODEL nor an existing genome JSON file"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_cuda_without_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = _run(["profile", "preset:deit_tiny", "--latency", "--device", "cuda"], capsys)
    assert code == 2 and "no CUDA GPU" in err and err.count("\n") == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"stem": {"kind": "patchify"}, "stages": [{"depth": 1, "dim": 64, "mixer": "atention"}]}',
     "did you mean 'attention'"),
    ('{"stem": {}, "stages": [], "colour": 3}', "unknown field 'colour'"),
    ("[1, 2]", "must be a JSON object"),
])
def test_malformed_genome_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = _run(["profile", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert message in err and str(path) in err


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    """The installed entry point: non-zero exit, one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "profile", "timm:not_a_model_at_all"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "unknown timm model" in lines[0] and "Traceback" not in proc.stderr


def test_latency_measure_cache_and_predict(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'lat.db'}"
    spec = PRESETS["pvt_v2_b0"].replace(img_size=64, num_classes=10)
    g = tmp_path / "g.json"
    g.write_text(spec.to_json())
    argv = ["latency", "measure", str(g), "--repeats", "3", "--warmup", "1", "--cache", url, "--json"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["cached"] is False and first["arch_id"] == spec.arch_id
    code, out, _ = _run(argv, capsys)
    assert json.loads(out)["cached"] is True
    pred_path = tmp_path / "pred.json"
    code, out, err = _run(["latency", "calibrate", "--models", "3", "--img-size", "64", "--repeats", "3",
                           "--warmup", "1", "--out", str(pred_path)], capsys)
    assert code == 0, err
    assert pred_path.exists() and "saved to" in out
    code, out, err = _run(["latency", "predict", str(g), "--predictor", str(pred_path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["latency_ms"] > 0
    code, _, err = _run(["latency", "predict", str(g), "--predictor", str(tmp_path / "none.json")], capsys)
    assert code == 2 and "nas latency calibrate" in err
