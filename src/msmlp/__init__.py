"""msmlp: take shift-based vision MLPs (MS-MLP, S2-MLPv2) from PyTorch to production inference."""

from __future__ import annotations

from msmlp.errors import EngineError, ExportError, InputError, MsmlpError, VerificationError
from msmlp.models import DeployConfig, create_model, get_config, list_models

__version__ = "0.1.0"

__all__ = [
    "DeployConfig",
    "EngineError",
    "ExportError",
    "InputError",
    "MsmlpError",
    "VerificationError",
    "__version__",
    "create_model",
    "get_config",
    "list_models",
]
