"""Export an architecture as a timm model folder (the layout of a Hugging Face hub timm repo).

``export_genome(spec, out)`` writes, atomically (a temp folder next to ``out``, then a rename)::

    out/config.json          architecture "attnnas", model_args {"genome": ...}, num_classes,
                             pretrained_cfg (input_size, mean, std, classifier, first_conv, ...)
    out/model.safetensors    the weights, when given (proxy-trained weights or any fitting state dict)
    out/README.md            the model card: genome, per-stage table, FLOPs, params, latency, accuracy
    out/<name>_model.py      one self-contained file (torch + timm only) registering ``<name>``

How an exported model loads in a new process:

- ``timm.create_model("local-dir:out", pretrained=True)`` after importing any of this project's
  packages (``import nas``, ``import search_space``, ...): config.json names the generic
  ``attnnas`` entry point and carries the genome, so a copied folder loads anywhere this package
  is installed; no global state needed.
- ``timm.create_model("<name>", num_classes=...)`` after ``nas.export.register_exports()``: every
  export is recorded in a small registry file (``$ATTNNAS_EXPORTS``, default
  ``~/.config/attnnas/exports.json``) holding the name, the genome and the folder;
  ``register_exports()`` registers each recorded name with timm (``pretrained=True`` loads the
  folder's weights). Importing this package reads no file: the registry is read only when asked.
- Without this package: ``import <name>_model`` from the folder registers ``<name>`` too.

``export_trial(...)`` does the same for a trial of a study store (Optuna RDB storage), taking
the genome, costs and metrics from the trial's attributes (``nas.attrs``).

The package's modules, one concern each: ``card`` (what the model card says), ``registry`` (the
names and the registry file), ``weights`` (saving and loading state dicts), ``writer`` (the
folder), ``trials`` (picking and exporting a trial of a study).
"""

from __future__ import annotations

from nas.errors import NasError
from nas.export.card import ExportInfo, model_card
from nas.export.registry import (
    REGISTRY_ENV,
    default_name,
    exported_names,
    register_exports,
    registry_path,
)
from nas.export.trials import (
    Rule,
    export_trial,
    format_front,
    front_records,
    get_trial,
    open_study,
    select_trial,
    stored_weights,
)
from nas.export.weights import WEIGHTS_FILE, load_state_dict_for, save_weights
from nas.export.writer import _self_check, export_genome

__all__ = [
    "ExportInfo", "export_genome", "export_trial", "select_trial", "load_state_dict_for", "registry_path",
    "register_exports", "exported_names", "default_name", "NasError", "Rule", "format_front", "front_records",
    "get_trial", "open_study", "stored_weights", "model_card", "REGISTRY_ENV", "WEIGHTS_FILE", "_self_check",
    "save_weights",
]
