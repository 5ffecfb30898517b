"""Weights files of exported and searched models: save and load state dicts as safetensors."""

from __future__ import annotations

from pathlib import Path

import torch

from nas.errors import NasError

WEIGHTS_FILE = "model.safetensors"

def load_state_dict_for(model: torch.nn.Module, source: str | Path | dict[str, torch.Tensor],
                        what: str = "the weights") -> None:
    """Load ``source`` (a safetensors/torch file or a state dict) into ``model`` strictly; a
    ``NasError`` in one line names what does not fit."""
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise NasError(f"{what}: no such file {path}")
        from timm.models import load_state_dict

        try:
            source = load_state_dict(str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise NasError(f"{what} at {path} could not be read: {type(e).__name__}: {str(e).splitlines()[0]}") from None
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


