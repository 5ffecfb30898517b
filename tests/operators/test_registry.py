"""The name -> class registries are read-only ``collections.abc.Mapping``s."""

from __future__ import annotations

import collections.abc
import subprocess
import sys
from pathlib import Path

import pytest

import operators
from operators import CHANNEL_ATTNS, CHANNEL_MLPS, DOWNSAMPLERS, MIXERS, POS_ENCODINGS, STEMS
from operators.errors import NasError, UnknownNameError

REGISTRIES = (MIXERS, POS_ENCODINGS, STEMS, DOWNSAMPLERS, CHANNEL_MLPS, CHANNEL_ATTNS)


@pytest.mark.parametrize("reg", REGISTRIES, ids=lambda r: r.kind)
def test_registry_is_a_mapping(reg):
    assert isinstance(reg, collections.abc.Mapping)
    d = dict(reg)
    assert list(d) == reg.names() == sorted(d) and len(d) == len(reg) > 0
    assert all(d[name] is reg[name] is reg.get(name) for name in d)
    assert all(cls.registry_name == name for name, cls in d.items())
    assert dict(reg.items()) == d and list(reg.keys()) == list(d) and list(reg.values()) == list(d.values())
    assert reg == d and hash(reg) == hash(reg)


def test_dict_of_mixers_works():
    mixers = dict(operators.MIXERS)
    assert mixers["attention"] is operators.MIXERS["attention"]
    assert {"attention", "window", "pool", "sepconv"} <= set(mixers)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        MIXERS["mine"] = object  # type: ignore[index]
    with pytest.raises(TypeError):
        del MIXERS["attention"]  # type: ignore[attr-defined]
    assert "mine" not in MIXERS


def test_unknown_names_as_a_mapping_and_as_a_user_error():
    assert MIXERS.get("nope", None) is None and MIXERS.get("nope", "x") == "x"
    assert "nope" not in MIXERS and [] not in MIXERS
    for catch in (KeyError, ValueError, NasError, UnknownNameError):
        with pytest.raises(catch, match=r"^unknown token mixer 'atention' \(did you mean 'attention'\?\); known: "):
            MIXERS["atention"]
    with pytest.raises(UnknownNameError):
        MIXERS.get("atention")


def test_lookups_load_the_families_on_demand():
    """``import operators`` imports no family (nor torch); the first lookup fills the registries."""
    code = ("import sys, operators\n"
            "print('torch' in sys.modules, 'operators.attention' in sys.modules)\n"
            "n = len(dict(operators.MIXERS))\n"
            "print('operators.attention' in sys.modules, n)\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.split("\n")[:2]
    assert before == "False False"
    assert after == f"True {len(MIXERS)}"
