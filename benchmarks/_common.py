"""Helpers shared by the benchmarks: machine description and the JSON results format.

Every benchmark writes ``{"summary": {...headline figures...}, "machine": {...}, "rows": [...], ...}``
(DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from evaluators.latency import cpu_name


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Where a benchmark ran: platform, CPU, core count, torch/timm versions, device, threads."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": device,
        "threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(path: str | Path, summary: dict[str, Any], rows: list[dict[str, Any]], **extra: Any) -> Path:
    """Write ``{"summary", "machine", "rows", **extra}`` to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = extra.pop("machine", None) or machine_info()
    doc = {"summary": summary, "machine": machine, "rows": rows, **extra}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path
