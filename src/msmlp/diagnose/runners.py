"""Where ``compare-layers`` runs a graph: a backend from the table, opened on a tapped copy of the graph
(every watched tensor an output) and asked for those tensors through ``Backend.infer(outputs=...)``.

The targets are the ``compare_layer_targets`` of the backends whose spec has ``intermediate_outputs``
(``onnxruntime``, its ``cuda`` and ``tensorrt`` execution providers, ``openvino``, ``openvino-bf16``...).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from msmlp.artifacts import read_artifact
from msmlp.errors import InputError
from msmlp.runtime.registry import BackendSpec, Request, backend_specs

REFERENCE = "onnxruntime"  # exact FP32 on the CPU, the export's own check backend
Run = Callable[[np.ndarray], dict[str, np.ndarray]]


def layer_targets() -> dict[str, tuple[BackendSpec, Mapping[str, Any]]]:
    """Target name -> (backend spec, options for its factory), from the backend table."""
    return {
        name: (spec, options)
        for spec in backend_specs()
        if spec.intermediate_outputs
        for name, options in spec.compare_layer_targets.items()
    }


@dataclass(frozen=True)
class Target:
    """A graph file and where it runs: ``model.int8.onnx`` on ``onnxruntime``, ``model.onnx`` on
    ``openvino-bf16``..."""

    path: Path
    backend: str = REFERENCE

    @property
    def label(self) -> str:
        return f"{self.path.name} on {self.backend}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """``PATH`` or ``PATH@TARGET`` (one of :func:`layer_targets`)."""
        path, _, backend = str(text).rpartition("@") if "@" in str(text) else (str(text), "", REFERENCE)
        targets = layer_targets()
        if backend not in targets:
            raise InputError(f"candidate backend {backend!r} in {text!r} is not one of {', '.join(targets)}")
        if not Path(path).is_file():
            raise InputError(f"graph {path!r} does not exist or is not a file")
        return cls(Path(path), backend)


def open_runner(target: Target, model: onnx.ModelProto, outputs: Sequence[str], threads: int | None) -> Run:
    """A function: input batch -> {output name: array} for the tapped ``model`` on ``target``."""
    targets = layer_targets()
    if target.backend not in targets:
        raise InputError(f"{target.label}: the backend is not one of {', '.join(targets)}")
    spec, options = targets[target.backend]
    with tempfile.TemporaryDirectory(prefix="msmlp-taps-") as tmp:
        path = Path(tmp) / target.path.name
        onnx.save_model(model, str(path))
        artifact = dataclasses.replace(read_artifact(path), batch=None)  # any batch the chunks need
        request = Request(path, "onnx", threads=threads, artifact=artifact, cache=False, **options)
        backend = spec.open(request).load()
    names = list(outputs)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return backend.infer({backend.input_name: x}, outputs=names)

    return run


def reference_runner(path: Path, model: onnx.ModelProto, outputs: Sequence[str], threads: int | None) -> Run:
    """The FP32 reference always runs on ONNX Runtime CPU (exact FP32, the export's own check backend)."""
    return open_runner(Target(path), model, outputs, threads)


def describe(target: Target) -> dict[str, Any]:
    return {"file": str(target.path), "backend": target.backend}
