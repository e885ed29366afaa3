"""Reference PyTorch backbones and their registry.

Loaded on first use: ``msmlp.models.config`` (the deploy config an exported artefact records) is read by
the runtime, which must not import torch. The registry imports the families when it is first asked.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DeployConfig": "msmlp.models.config",
    "create_model": "msmlp.models.registry",
    "get_config": "msmlp.models.registry",
    "list_models": "msmlp.models.registry",
    "register_model": "msmlp.models.registry",
    "load_checkpoint": "msmlp.models.checkpoint",
    "read_state_dict": "msmlp.models.checkpoint",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'msmlp.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
