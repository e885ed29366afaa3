"""Backends behind one protocol, batching, and image pre/post-processing.

``open_backend`` picks the backend from what the user has: a registered model name (PyTorch), an ONNX
file (ONNX Runtime) or a TensorRT plan (TensorRT). Optional libraries are imported only when used.
"""

from __future__ import annotations

from pathlib import Path

from msmlp.errors import InputError
from msmlp.runtime.base import Backend


def open_backend(
    *,
    model: str | None = None,
    weights: str | None = None,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> Backend:
    """Exactly one of ``model``, ``onnx`` or ``engine``; the backend is returned unloaded."""
    given = [k for k, v in (("model", model), ("onnx", onnx), ("engine", engine)) if v is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one of --model, --onnx or --engine (got {given or 'none'})")
    if model is not None:
        from msmlp.runtime.torch_backend import TorchBackend

        return TorchBackend(model, weights=weights)
    if onnx is not None:
        from msmlp.runtime.ort import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx, providers=providers, threads=threads)
    from msmlp.runtime.trt import TensorRTBackend

    return TensorRTBackend(engine)


__all__ = ["Backend", "open_backend"]
