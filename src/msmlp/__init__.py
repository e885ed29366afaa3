"""msmlp: take shift-based vision MLPs (MS-MLP, S2-MLPv2) from PyTorch to production inference.

The package imports nothing heavy: ``import msmlp`` and ``msmlp --help`` stay fast, and the names below
are loaded on first use. Embedding in a service takes three lines::

    import msmlp
    predictor = msmlp.load("out/s2mlpv2_small/model.onnx")   # or a model name, or a TensorRT plan
    predictions = predictor.predict(["photo.jpg"])
"""

from __future__ import annotations

from msmlp.errors import EngineError, ExportError, InputError, MsmlpError, VerificationError
from msmlp.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "DeployConfig": "msmlp.models.config",
    "create_model": "msmlp.models",
    "export": "msmlp.api",
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
    *_LAZY,
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
