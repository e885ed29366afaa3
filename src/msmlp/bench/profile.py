"""Where the time goes, per layer, from each backend's own profiler (ONNX Runtime's trace,
torch.profiler, OpenVINO's performance counters with the kernel and precision each layer ran in):
the backends whose spec has ``layer_profile`` implement :meth:`msmlp.runtime.base.Backend.profile_layers`,
all ranked the same way (:func:`msmlp.runtime.profiling.ranked`)."""

from __future__ import annotations

from typing import Any

from msmlp.bench.timing import make_batch
from msmlp.runtime.base import Backend
from msmlp.runtime.registry import backend_specs


def profile_layers(
    backend: Backend, batch: int, *, runs: int = 10, top: int = 15, size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The per-layer profile of ``backend`` at ``batch``; ``{"available": False, "reason": ...}`` when the
    backend has no profiler."""
    spec = next((s for s in backend_specs() if s.name == backend.name), None)
    if spec is None or not spec.layer_profile:
        return {"available": False, "reason": f"the {backend.name} backend exposes no per-layer profiler"}
    return backend.profile_layers(make_batch(backend, batch, size=size), runs=runs, top=top)
