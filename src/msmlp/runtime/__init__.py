"""Backends behind one protocol (PyTorch, ONNX Runtime, OpenVINO, TensorRT) and the dynamic batcher.

:func:`open_backend` opens "a model name, an ONNX file or an engine" with the backend asked for; it is
the one place that decides which backend class runs what. Optional libraries are imported only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msmlp.errors import InputError
from msmlp.extras import require_extra
from msmlp.runtime.base import Backend, BackendInfo

BACKENDS = ("auto", "pytorch", "onnxruntime", "openvino", "tensorrt")


def open_backend(
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    backend: str = "auto",
    providers: Any = None,
    threads: int | None = None,
    precision: str | None = None,
    seed: int = 0,
) -> Backend:
    """Exactly one of ``model``, ``onnx`` or ``engine``; the backend is returned unloaded.

    ``backend``: ``auto`` (a model name runs in PyTorch, a plan in TensorRT, an ONNX graph on the fastest
    verified CPU backend: see :mod:`msmlp.runtime.select`), or a backend name, which always wins.
    ``precision``: an inference precision for backends that take a hint (OpenVINO ``bf16``).
    """
    given = [k for k, v in (("model", model), ("onnx", onnx), ("engine", engine)) if v is not None]
    if len(given) != 1:
        raise InputError(
            f"give exactly one of --model, --onnx or --engine (got {', '.join(given) or 'none'})"
        )
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if weights is not None and model is None:
        raise InputError("--weights applies to --model; an ONNX graph or engine carries its own weights")
    if model is not None:
        if backend not in ("auto", "pytorch"):
            raise InputError(
                f"--backend {backend} runs exported files; export first (msmlp-export --model {model}) "
                "and pass --onnx, or use --backend pytorch"
            )
        require_extra("export", f"--model {model} (a registered model runs in PyTorch)", modules=("torch",))
        from msmlp.runtime.torch_backend import TorchBackend

        return TorchBackend(model, weights=weights, seed=seed, autocast_bf16=precision == "bf16")
    if engine is not None:
        if backend not in ("auto", "tensorrt"):
            raise InputError(f"--backend {backend} cannot run a TensorRT plan; use --backend tensorrt")
        from msmlp.runtime.trt import TensorRTBackend

        return TensorRTBackend(engine)
    return _open_onnx(Path(onnx), backend, providers, threads, precision)  # type: ignore[arg-type]


def _open_onnx(
    path: Path, backend: str, providers: Any, threads: int | None, precision: str | None
) -> Backend:
    if backend == "auto":
        from msmlp.runtime.select import select_backend

        return select_backend(path, threads=threads, precision=precision)
    if backend == "onnxruntime":
        from msmlp.runtime.ort import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers=providers, threads=threads)
    if backend == "openvino":
        from msmlp.runtime.openvino import OpenVINOBackend

        return OpenVINOBackend(path, inference_precision=precision, threads=threads)
    if backend == "tensorrt":
        raise InputError(
            "--backend tensorrt runs a plan: build one with msmlp build ONNX, then pass --engine"
        )
    raise InputError(f"--backend pytorch runs a registered model: pass --model NAME instead of --onnx {path}")


__all__ = ["BACKENDS", "Backend", "BackendInfo", "open_backend"]
