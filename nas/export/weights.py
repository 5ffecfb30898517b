"""Weights files of exported and searched models: save and load state dicts as safetensors.

One writer and one reader for every place the product keeps weights (``nas export --weights``,
the search's ``save_weights = true``). A parameter reachable under two names (e.g. Linformer's
``share_kv``, where ``proj_v`` is ``proj_k``) is written once (safetensors' ``save_model``, which
records each dropped name in the file's metadata) and loads back tied: the model's
``load_state_dict`` fills the dropped names from their twin (``search_space.builder.fill_tied_entries``),
so strict loading, timm's loaders and the standalone file all work on such files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nas.errors import NasError
from search_space.builder import fill_tied_entries

WEIGHTS_FILE = "model.safetensors"


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s state dict to the safetensors file ``path``, atomically (a temporary file
    beside it, then a rename), each shared tensor once. Returns the path.

    Raises ``OSError`` when the folder cannot be written."""
    from safetensors.torch import save_model

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_model(model, str(tmp), metadata=dict(metadata) if metadata else None, force_contiguous=True)
        os.replace(tmp, path)  # a killed writer never leaves half a file under the real name
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_state_dict_for(model: torch.nn.Module, source: str | Path | dict[str, torch.Tensor],
                        what: str = "the weights") -> None:
    """Load ``source`` (a safetensors/torch file or a state dict) into ``model`` strictly, tied
    parameters staying tied; a ``NasError`` in one line names what does not fit."""
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise NasError(f"{what}: no such file {path}")
        from timm.models import load_state_dict

        try:
            source = load_state_dict(str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise NasError(f"{what} at {path} could not be read: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    source = dict(source)
    fill_tied_entries(model, source, "")  # a name dropped as a duplicate reads its twin's entry
    own = model.state_dict()
    missing = [k for k in own if k not in source]
    unexpected = [k for k in source if k not in own]
    shapes = [f"{k} {tuple(source[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in source and tuple(source[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]} (checkpoint vs genome)")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise NasError(f"{what} do not fit the genome: {'; '.join(parts)}")
    model.load_state_dict(source, strict=True)


