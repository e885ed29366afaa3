"""msmlp: take shift-based vision MLPs (MS-MLP, S2-MLPv2) from PyTorch to production inference.

The package imports nothing heavy: ``import msmlp`` and ``msmlp --help`` stay fast, and the names below
are loaded on first use. Embedding in a service takes three lines::

    import msmlp
    predictor = msmlp.load("out/s2mlpv2_small/model.onnx")   # or a model name, or a TensorRT plan
    predictions = predictor.predict(["photo.jpg"])
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from msmlp.errors import EngineError, ExportError, InputError, MsmlpError, VerificationError

__version__ = "0.1.0"

_LAZY = {
    "DeployConfig": "msmlp.models.config",
    "create_model": "msmlp.models",
    "get_config": "msmlp.models",
    "list_models": "msmlp.models",
    "load": "msmlp.api",
    "Predictor": "msmlp.api",
    "read_artifact": "msmlp.artifacts",
}

__all__ = [
    "EngineError",
    "ExportError",
    "InputError",
    "MsmlpError",
    "VerificationError",
    "__version__",
    "export",
    *_LAZY,
]


class _ExportPackage(types.ModuleType):
    """``msmlp.export`` is the export subpackage and, called, the export API (:func:`msmlp.api.export`).

    A plain function named ``export`` would be replaced by the subpackage the first time anything
    imports ``msmlp.export.onnx``; a callable package gives ``msmlp.export("s2mlpv2_small")`` one meaning.
    """

    def __call__(self, model: str, **options: Any) -> Any:
        return importlib.import_module("msmlp.api").export(model, **options)


def _make_export_callable() -> None:
    package = importlib.import_module("msmlp.export")  # light: its __init__ imports nothing
    package.__class__ = _ExportPackage


_make_export_callable()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'msmlp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
