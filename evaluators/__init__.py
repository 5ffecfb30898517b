"""Evaluators: costs (FLOPs, params, latency, memory), datasets, proxy training, zero-cost proxies.

Names resolve lazily so ``import evaluators`` stays cheap; each lives in the module named here.
"""

from __future__ import annotations

import importlib
from typing import Any

import search_space  # noqa: F401 - makes the project's timm names (attnnas, ...) available

# name -> module. Add a line per public name; one module per concern.
_EXPORTS: dict[str, str] = {
    # cost model
    "count_flops": "evaluators.flops",
    "FlopCount": "evaluators.flops",
    "count_params": "evaluators.params",
    "params_by_part": "evaluators.params",
    "ParamCount": "evaluators.params",
    "count_flops_meta": "evaluators.flops",
    "screen": "evaluators.screening",
    "screen_genome": "evaluators.screening",
    "Costs": "evaluators.screening",
    "arch_kernels": "evaluators.kernels",
    "measure_latency": "evaluators.latency",
    "LatencyResult": "evaluators.latency",
    "LatencyCache": "evaluators.latency",
    "LatencyPredictor": "evaluators.latency_predictor",
    "training_memory": "evaluators.memory",
    "MemoryEstimate": "evaluators.memory",
    # datasets and proxy training (evaluators.data, evaluators.proxy)
    "DataSpec": "evaluators.data",
    "LoadedData": "evaluators.data",
    "load_dataset": "evaluators.data",
    "ProxyConfig": "evaluators.proxy",
    "ProxyResult": "evaluators.proxy",
    "ProxyTrainer": "evaluators.proxy",
    "StopTraining": "evaluators.proxy",
    "zero_cost_scores": "evaluators.zero_cost",
    # weight-sharing supernet (evaluators.supernet)
    "WeightBank": "evaluators.supernet",
    "SupernetSpace": "evaluators.supernet",
    "SupernetTrainer": "evaluators.supernet",
    "score_path": "evaluators.supernet",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evaluators' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
