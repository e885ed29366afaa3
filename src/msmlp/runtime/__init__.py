"""Backends behind one protocol (PyTorch, ONNX Runtime, OpenVINO, TensorRT and any registered one) and
the dynamic batcher.

:func:`open_backend` opens "a model name, an ONNX file or an engine" with the backend asked for, by the
backend table (:mod:`msmlp.runtime.registry`): each backend's spec says what it opens and how. Optional
libraries are imported only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msmlp.errors import InputError
from msmlp.extras import require_extra
from msmlp.runtime.base import Backend, BackendInfo
from msmlp.runtime.registry import (
    BackendSpec,
    Request,
    backend_names,
    backend_specs,
    get_spec,
    register_backend,
)

# What a backend that does not open the given kind of source tells the user to pass instead.
_PASS = {
    "model": "runs a registered model: pass --model NAME",
    "onnx": "runs exported files: export first (msmlp-export --model NAME) and pass --onnx",
    "plan": "runs a plan: build one with msmlp build ONNX, then pass --engine",
}


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
    if backend not in backend_names():
        raise InputError(f"--backend {backend!r} is not one of {', '.join(backend_names())}")
    if weights is not None and model is None:
        raise InputError("--weights applies to --model; an ONNX graph or engine carries its own weights")
    kind, source = {"model": ("model", model), "onnx": ("onnx", onnx), "engine": ("plan", engine)}[given[0]]
    if kind == "model":
        require_extra("export", f"--model {model} (a registered model runs in PyTorch)", modules=("torch",))
    if kind == "onnx" and backend == "auto":
        from msmlp.runtime.select import select_backend

        return select_backend(Path(onnx), threads=threads, precision=precision)  # type: ignore[arg-type]
    # auto for a model name or a plan: the first backend in the table that opens it (PyTorch, TensorRT)
    spec = next(s for s in backend_specs() if kind in s.opens) if backend == "auto" else get_spec(backend)
    if kind not in spec.opens:
        how = "; or ".join(_PASS[k] for k in sorted(spec.opens))
        raise InputError(f"--backend {spec.name} {how} (not --{given[0]} {source})")
    request = Request(
        source if kind == "model" else Path(source),  # type: ignore[arg-type]
        kind,
        precision=precision,
        threads=threads,
        providers=providers,
        weights=weights,
        seed=seed,
    )
    return spec.open(request)


__all__ = [
    "Backend",
    "BackendInfo",
    "BackendSpec",
    "backend_names",
    "backend_specs",
    "get_spec",
    "open_backend",
    "register_backend",
]
