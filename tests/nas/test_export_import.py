"""Importing the project in a fresh process: timm names become available cheaply, and
``nas.export`` reads no file (the export registry under ~/.config is read only when asked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_space import ArchSpec, StageSpec, StemSpec

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, env_extra: dict[str, str] | None = None, home: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNNAS_EXPORTS", "XDG_CONFIG_HOME")}
    env["PYTHONPATH"] = str(ROOT)
    if home is not None:
        env["HOME"] = str(home)
    env.update(env_extra or {})
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def _tiny() -> ArchSpec:
    return ArchSpec(StemSpec("patchify", 8), (StageSpec(1, 16, "attention", {"num_heads": 2}),), num_classes=5,
                    img_size=32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An export with weights, plus the package model's logits on a fixed input."""
    from nas.export import export_genome
    from search_space import build_model

    root = tmp_path_factory.mktemp("imp")
    spec = _tiny()
    torch.manual_seed(0)
    model = build_model(spec).eval()
    out = export_genome(spec, root / "exp", name="imp_probe", weights=model.state_dict(), register=False)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.save({"x": x, "logits": model(x)}, root / "ref.pt")
    return out, root / "ref.pt"


@pytest.mark.parametrize("first", ["nas", "search_space", "evaluators", "timm_then_nas", "operators_imports_timm"])
def test_importing_any_package_registers_attnnas_for_local_dir(exported, first):
    """Whatever the order (operators itself imports timm while it loads), with no warning."""
    out, ref = exported
    imports = {"timm_then_nas": "import timm\nimport nas\n",
               "operators_imports_timm": "import nas\nfrom operators import MIXERS\nimport timm\n"}.get(
        first, f"import {first}\nimport timm\n")
    code = "import warnings\nwarnings.simplefilter('error')\n" + imports + f"""
import torch
m = timm.create_model("local-dir:{out}", pretrained=True).eval()
r = torch.load({str(ref)!r})
with torch.no_grad():
    print("DIFF", (m(r["x"]) - r["logits"]).abs().max().item())
print("LOADER", type(timm.__spec__.loader).__name__)
"""
    stdout = _run(code)
    assert float(stdout.split("DIFF ")[1].split()[0]) == 0.0
    assert "_ThenRegister" not in stdout.split("LOADER ")[1]


def test_import_nas_is_cheap_and_without_it_timm_says_unknown_model(exported):
    out, _ = exported
    stdout = _run("""
import sys
import nas
print("HEAVY", sorted(m for m in ("torch", "timm", "search_space.builder", "operators.block", "operators.attention") if m in sys.modules))
""")
    assert stdout.split("HEAVY ")[1].strip() == "[]"
    # without any project package the error is timm's; the model card explains it
    stdout = _run(f"""
import timm
try:
    timm.create_model("local-dir:{out}")
except RuntimeError as e:
    print("ERR", e)
""")
    err = stdout.split("ERR ")[1].strip()
    assert err == "Unknown model (attnnas)"
    card = (out / "README.md").read_text()
    assert f"`RuntimeError: {err}`" in card and "import nas" in card


def test_importing_nas_export_reads_no_config_file(tmp_path):
    """With a registry recorded under $HOME/.config, importing nas.export opens nothing under $HOME;
    ``register_exports()`` then reads it (so the probe does see such reads)."""
    home = tmp_path / "home"
    reg = home / ".config" / "attnnas" / "exports.json"
    reg.parent.mkdir(parents=True)
    reg.write_text(json.dumps({"version": 1, "exports": {
        "imp_recorded": {"dir": str(tmp_path / "gone"), "genome": _tiny().to_dict(), "weights": False}}}))
    stdout = _run(f"""
import sys
home = {str(home)!r}
seen = []
def audit(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and str(args[0]).startswith(home):
        seen.append(str(args[0]))
sys.addaudithook(audit)
import nas.export
import timm
print("AT_IMPORT", seen, timm.is_model("imp_recorded"))
names = nas.export.register_exports()
print("AFTER", names, timm.is_model("imp_recorded"), len(seen) > 0)
""", home=home)
    assert stdout.split("AT_IMPORT ")[1].splitlines()[0] == "[] False"
    assert stdout.split("AFTER ")[1].splitlines()[0] == "['imp_recorded'] True True"
