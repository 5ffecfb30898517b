"""What an export's model card says: ``ExportInfo`` (provenance, costs, metrics) and ``model_card``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas import attrs
from search_space.genome import ArchSpec


@dataclass
class ExportInfo:
    """Where an export came from and what it costs; every field optional (a bare genome has none)."""

    study: str | None = None
    trial: int | None = None
    storage: str | None = None
    values: dict[str, float] = field(default_factory=dict)  # objective name -> value
    flops: int | None = None
    params: int | None = None
    flops_per_stage: list[int] | None = None
    params_per_stage: list[int] | None = None
    latency_ms: float | None = None
    latency_spread_ms: float | None = None
    latency_device: str | None = None
    latency_setting: dict[str, Any] | None = None
    accuracy: float | None = None
    epochs: int | None = None
    epoch_budget: int | None = None
    code_version: str | None = None
    weights_source: str | None = None

    @classmethod
    def from_trial(cls, study: str, storage: str, trial: Any, objective_names: list[str]) -> ExportInfo:
        ua = trial.user_attrs
        values = dict(zip(objective_names, trial.values or [], strict=False))
        return cls(
            study=study, trial=trial.number, storage=_redact(storage), values=values,
            flops=ua.get(attrs.FLOPS), params=ua.get(attrs.PARAMS), flops_per_stage=ua.get(attrs.FLOPS_PER_STAGE),
            params_per_stage=ua.get(attrs.PARAMS_PER_STAGE), latency_ms=ua.get(attrs.LATENCY_MS),
            latency_spread_ms=ua.get(attrs.LATENCY_SPREAD_MS), latency_device=ua.get(attrs.LATENCY_DEVICE),
            latency_setting=ua.get(attrs.LATENCY_SETTING), accuracy=ua.get(attrs.ACCURACY),
            epochs=ua.get(attrs.EPOCHS), epoch_budget=ua.get(attrs.EPOCH_BUDGET),
            code_version=ua.get(attrs.CODE_VERSION),
        )


def _redact(url: str | None) -> str | None:
    from nas.store import redact

    return redact(url) if url else url


def _fmt_count(n: float | None) -> str:
    if n is None:
        return "not recorded"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:g}"


def model_card(spec: ArchSpec, model: torch.nn.Module, name: str, info: ExportInfo, has_weights: bool,
               folder: Path | None = None) -> str:
    """The README.md of an export: genome, per-stage table, costs, metrics, provenance, loading."""
    grids = spec.stage_grids()
    stage_params = info.params_per_stage or [sum(p.numel() for p in st.parameters()) for st in model.stages]
    rows = []
    for i, (s, grid) in enumerate(zip(spec.stages, grids, strict=False)):
        knobs = ", ".join(f"{k}={v}" for k, v in s.mixer_knobs) or "-"
        flops = _fmt_count(info.flops_per_stage[i]) if info.flops_per_stage and i < len(info.flops_per_stage) else "-"
        extras = [f"ls={s.layer_scale:g}" if s.layer_scale else "", s.channel_attn if s.channel_attn != "none" else ""]
        rows.append(f"| {i} | {s.downsample} | {grid[0]}x{grid[1]} | {s.depth} | {s.dim} | {s.mixer} | {knobs} | "
                    f"{s.pos} | {s.mlp} x{s.mlp_ratio:g} | {' '.join(e for e in extras if e) or '-'} | "
                    f"{_fmt_count(stage_params[i]) if i < len(stage_params) else '-'} | {flops} |")
    stem_knobs = ", ".join(f"{k}={v}" for k, v in spec.stem.knobs)
    head = spec.head.pool + (f" + MLP head x{spec.head.mlp_ratio:g}" if spec.head.mlp_ratio else "")
    if info.latency_ms is not None:
        setting = info.latency_setting or {}
        spread = f" (IQR {info.latency_spread_ms:.3g} ms)" if info.latency_spread_ms is not None else ""
        latency = (f"{info.latency_ms:.3g} ms{spread} on {info.latency_device or 'an unrecorded device'}, "
                   f"batch {setting.get('batch', '?')}, {setting.get('dtype', '?')}, {setting.get('img_size', '?')} px")
    else:
        latency = "not measured"
    if info.accuracy is not None:
        ep = f" after {info.epochs} of {info.epoch_budget} epochs" if info.epochs is not None else ""
        accuracy = f"{100 * info.accuracy:.2f}% top-1 (proxy training{ep}; not a full-training result)"
    else:
        accuracy = "not recorded"
    objectives = ", ".join(f"{k} = {v:.6g}" for k, v in info.values.items()) or "-"
    origin = (f"study `{info.study}`, trial {info.trial}" + (f" (store `{info.storage}`)" if info.storage else "")
              if info.study is not None else "a genome (no study)")
    weights = (f"`model.safetensors`: {info.weights_source or 'given at export'}" if has_weights else
               "none: this export is the architecture only (train it, or export again with `--weights`)")
    load_pre = "pretrained=True" if has_weights else "pretrained=False"
    return f"""---
library_name: timm
tags:
- image-classification
- timm
- attention-nas
license: apache-2.0
---
# {name}

An architecture found by attention NAS: `{spec.summary()}`.

| | |
|---|---|
| Source | {origin} |
| Input | {spec.in_chans} x {spec.img_hw[0]} x {spec.img_hw[1]}, {spec.num_classes} classes |
| FLOPs (MACs) | {_fmt_count(info.flops)} at {spec.img_hw[0]}x{spec.img_hw[1]} px |
| Parameters | {_fmt_count(info.params)} ({info.params if info.params is not None else '?'}) |
| Latency | {latency} |
| Proxy accuracy | {accuracy} |
| Objectives | {objectives} |
| Weights | {weights} |
| arch_id | `{spec.arch_id}` |
| Code version | {info.code_version or 'not recorded'} |

## Genome

Stem: `{spec.stem.kind}` patch {spec.stem.patch_size}{f' ({stem_knobs})' if stem_knobs else ''}. Head: {head}.

| stage | downsample | grid | depth | width | mixer | mixer knobs | pos | MLP | extras | params | FLOPs |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The full genome is `model_args.genome` in `config.json`.

## Load it

With attention-nas installed:

```python
import timm
import nas  # any of its packages registers "attnnas", the architecture config.json names

model = timm.create_model("local-dir:{folder or '/path/to/this/folder'}", {load_pre})

import nas.export
nas.export.register_exports()  # registers every exported name recorded on this machine
model = timm.create_model("{name}", num_classes=10)  # by name, a fresh 10-class classifier
```

`RuntimeError: Unknown model (attnnas)` from `timm.create_model("local-dir:...")` means that no
package of attention-nas was imported in that process (or it is not installed there): timm learns
the `attnnas` architecture only from it. Add `import nas` before the call, or use the standalone
file below. `Unknown model ({name})` by name means `nas.export.register_exports()` (or
`import {name}_model`) was not run first.

Without attention-nas, vendor `{name}_model.py` (depends only on torch and timm):

```python
import timm
import {name}_model  # registers "{name}"

model = timm.create_model("{name}", {load_pre})
```

Weights of your own (for example after training this architecture) load in any of timm's ways:

```python
model = timm.create_model("{name}", pretrained=True, pretrained_cfg_overlay=dict(file="w.safetensors"))
model = timm.create_model("{name}", checkpoint_path="w.safetensors")
# or save them as model.safetensors in this folder, then:
model = timm.create_model("local-dir:{folder or '/path/to/this/folder'}", pretrained=True)
```

`features_only=True`, `forward_intermediates`, `reset_classifier` and `torch.export` work as for any timm model.
"""


