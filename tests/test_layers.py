"""The layering contract: ``operators <- search_space <- evaluators <- nas``, no sibling cycles.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and ``.ci/run`` checks them
with ``lint-imports``; these tests run the same check on the tree, and on copies of it with one
upward import or one cycle added, which must break it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("operators", "search_space", "evaluators", "nas")

_LINT = ("import sys\n"
         "from importlinter.cli import lint_imports\n"
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))\n")


def lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the tree at ``root`` (a fresh interpreter, so nothing imported here leaks in)."""
    return subprocess.run([sys.executable, "-c", _LINT], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def copy_tree(tmp_path: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Layers: operators <- search_space <- evaluators <- nas KEPT" in r.stdout
    assert "No import cycles between sibling modules KEPT" in r.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("evaluators/flops.py", "from nas.errors import NasError as _E  # noqa", "evaluators is not allowed to import nas"),
    ("operators/mlp.py", "def _f():\n    from search_space.genome import ArchSpec  # noqa\n",
     "operators is not allowed to import search_space"),
    ("search_space/validate.py", "from search_space.genome import ArchSpec as _A  # noqa",
     "No cycles are allowed in search_space"),
])
def test_an_upward_import_or_a_cycle_breaks_the_check(tmp_path, module, line, broken):
    root = copy_tree(tmp_path)
    with open(root / module, "a") as f:
        f.write("\n" + line + "\n")
    r = lint(root)
    assert r.returncode == 1, r.stdout[-3000:]
    assert broken in r.stdout, r.stdout[-3000:]


def test_errors_are_defined_once_and_re_exported():
    import nas.errors
    import operators.errors

    for name in ("NasError", "UnknownNameError", "InvalidCandidate", "StoreError", "BundleError",
                 "did_you_mean", "first_line", "one_line"):
        assert getattr(nas.errors, name) is getattr(operators.errors, name), name
    from nas._standalone import BundleError
    from nas.dashboard.data import StoreError
    from nas.space import InvalidCandidate

    assert (BundleError, StoreError, InvalidCandidate) == (
        operators.errors.BundleError, operators.errors.StoreError, operators.errors.InvalidCandidate)


def test_the_bottom_of_the_layers_imports_no_torch():
    """``nas.errors`` (the CLI's error type) sits on ``operators.errors``: loading it must not
    load torch or the operator families."""
    code = ("import sys, nas.errors, nas.study, search_space.genome\n"
            "print(sorted(m for m in ('torch', 'operators.attention', 'evaluators.flops') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_hints_and_one_line_formatting():
    from operators.errors import NasError, did_you_mean, first_line, one_line

    assert did_you_mean("atention", ["attention", "window"]) == " (did you mean 'attention'?)"
    assert did_you_mean("zzz", ["attention", "window"]) == ""
    assert did_you_mean("lr", ["lr_max", "epochs"], cutoff=0.5) == " (did you mean 'lr_max'?)"
    assert one_line(RuntimeError("boom\n  at line 3")) == "RuntimeError: boom"
    assert one_line(NasError("bad key  'x'")) == "bad key 'x'"
    assert one_line(RuntimeError("x" * 900), limit=50) == "RuntimeError: " + "x" * 36

    class Wrapped(Exception):
        orig = OSError("connection refused\nDETAIL: ...")

    assert first_line(Wrapped("(psycopg2.OperationalError) connection refused")) == "connection refused"
    assert first_line(KeyError()) == "KeyError"
