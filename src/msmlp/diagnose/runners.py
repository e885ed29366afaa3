"""Run a graph with extra outputs and hand back named arrays: ONNX Runtime (CPU, or its CUDA / TensorRT
execution providers where present) and OpenVINO (f32 or the bf16 hint).

The backends in :mod:`msmlp.runtime` return the logits only, by design; diagnosis needs every watched
tensor, so these small runners load the tapped copy of a graph with the same loaders and options.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from msmlp.errors import EngineError, InputError
from msmlp.log import logger

TARGETS = ("onnxruntime", "openvino", "openvino-bf16", "tensorrt", "cuda")
Run = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Target:
    """A graph file and where it runs: ``model.int8.onnx`` on ``onnxruntime``, ``model.onnx`` on
    ``openvino-bf16``..."""

    path: Path
    backend: str = "onnxruntime"

    @property
    def label(self) -> str:
        return f"{self.path.name} on {self.backend}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """``PATH`` or ``PATH@BACKEND`` (backends: onnxruntime, openvino, openvino-bf16, tensorrt, cuda)."""
        path, _, backend = str(text).rpartition("@") if "@" in str(text) else (str(text), "", "onnxruntime")
        if backend not in TARGETS:
            raise InputError(f"candidate backend {backend!r} in {text!r} is not one of {', '.join(TARGETS)}")
        if not Path(path).is_file():
            raise InputError(f"graph {path!r} does not exist or is not a file")
        return cls(Path(path), backend)


def open_runner(target: Target, model: onnx.ModelProto, outputs: Sequence[str], threads: int | None) -> Run:
    """A function: input batch -> {output name: float32 array} for the tapped ``model`` on ``target``."""
    if target.backend.startswith("openvino"):
        return _openvino(target, model, outputs, threads)
    return _onnxruntime(target, model, outputs, threads)


def _onnxruntime(target: Target, model: onnx.ModelProto, outputs: Sequence[str], threads: int | None) -> Run:
    from msmlp.runtime.ort import session_from_onnx

    providers = {"tensorrt": ["tensorrt", "cpu"], "cuda": ["cuda", "cpu"]}.get(target.backend)
    with tempfile.TemporaryDirectory(prefix="msmlp-taps-") as tmp:
        path = Path(tmp) / target.path.name
        onnx.save_model(model, str(path))
        session = session_from_onnx(path, providers=providers, threads=threads)
    names = list(outputs)
    input_name = session.get_inputs()[0].name
    wants_fp16 = session.get_inputs()[0].type == "tensor(float16)"

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        feed = x.astype(np.float16) if wants_fp16 else x
        try:
            values = session.run(names, {input_name: feed})
        except Exception as exc:  # ORT's Fail / InvalidArgument at run time
            logger.debug("ONNX Runtime failed on the tapped graph", exc_info=True)
            raise EngineError(f"ONNX Runtime failed on tapped {target.path.name}: {exc}") from exc
        return dict(zip(names, values))

    return run


def _openvino(target: Target, model: onnx.ModelProto, outputs: Sequence[str], threads: int | None) -> Run:
    from msmlp.runtime.openvino import OpenVINOBackend, bf16_support, openvino_module

    ov = openvino_module()
    hint = "bf16" if target.backend == "openvino-bf16" else None
    options = OpenVINOBackend(
        target.path, inference_precision=hint, threads=threads, cache_dir=False
    ).config()
    core = ov.Core()
    if hint:
        ok, why = bf16_support(core)
        if not ok:
            raise EngineError(f"{target.label} needs native BF16 but {why}")
    with tempfile.TemporaryDirectory(prefix="msmlp-taps-") as tmp:
        path = Path(tmp) / target.path.name
        onnx.save_model(model, str(path))
        try:
            compiled = core.compile_model(core.read_model(str(path)), "CPU", options)
        except RuntimeError as exc:
            logger.debug("OpenVINO could not compile the tapped graph", exc_info=True)
            raise EngineError(f"OpenVINO cannot compile tapped {target.path.name}: {exc}") from exc
    index = {name: i for i, port in enumerate(compiled.outputs) for name in port.get_names()}
    names = [n for n in outputs if n in index]
    if len(names) < len(outputs):
        logger.info("openvino: %d watched tensors are not separate outputs", len(outputs) - len(names))
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        request.infer({0: x})
        return {n: np.array(request.get_output_tensor(index[n]).data, copy=True) for n in names}

    return run


def reference_runner(path: Path, model: onnx.ModelProto, outputs: Sequence[str], threads: int | None) -> Run:
    """The FP32 reference always runs on ONNX Runtime CPU (exact FP32, the export's own check backend)."""
    return _onnxruntime(Target(path), model, outputs, threads)


def describe(target: Target) -> dict[str, Any]:
    return {"file": str(target.path), "backend": target.backend}
