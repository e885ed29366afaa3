"""``--backend auto`` for an ONNX graph: the fastest installed CPU backend that passed verification.

Placeholder until the OpenVINO backend lands: ONNX Runtime on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from msmlp.log import logger
from msmlp.runtime.base import Backend


def select_backend(path: Path, *, threads: int | None = None, precision: str | None = None) -> Backend:
    from msmlp.runtime.ort import OnnxRuntimeBackend

    logger.info("backend auto: onnxruntime (CPU) for %s", path.name)
    return OnnxRuntimeBackend(path, threads=threads)
