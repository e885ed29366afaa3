"""Load checkpoint files into registered models, strictly, with errors that name what does not fit."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from msmlp.errors import InputError

STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module")
MAX_LISTED = 6


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file: a plain state dict, or one nested under ``model`` / ``state_dict``.

    Uses ``torch.load(weights_only=True)``: a checkpoint that needs arbitrary unpickling is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist or is not a file; pass a .pth/.pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        OSError,
    ) as exc:
        # torch's own message suggests retrying with weights_only=False, which would run arbitrary code
        # from the file: never quote it. Say what the file is not and what msmlp accepts.
        raise InputError(
            f"cannot read checkpoint {str(path)!r} ({type(exc).__name__}): it is not a torch.save file holding "
            "only tensors; msmlp accepts a state dict of tensors (plain, or under 'model'/'state_dict') and "
            "never unpickles arbitrary objects"
        ) from exc
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(
            f"checkpoint {str(path)!r} holds no state dict (found {type(obj).__name__}); expected a mapping of "
            f"parameter names to tensors, possibly under one of {STATE_DICT_KEYS}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise one error listing missing keys, unexpected keys and shape mismatches, if any."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    name = getattr(model, "model_name", type(model).__name__)
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:MAX_LISTED])}{more}")
    raise InputError(
        f"{source} does not fit model {name!r}: {'; '.join(parts)}; "
        "is it a checkpoint for a different model? (`msmlp models` lists the architectures)"
    )


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint file into ``model`` with no missing or unexpected keys."""
    state_dict = read_state_dict(path)
    check_state_dict(model, state_dict, source=f"checkpoint {str(path)!r}")
    model.load_state_dict(state_dict, strict=True)
    return model
