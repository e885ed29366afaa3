"""FP16 graphs through NVIDIA ModelOpt AutoCast, with FP32 kept where FP16 would overflow.

TensorRT 11 has no FP16 builder flag: precision lives in the ONNX graph. AutoCast converts the graph to
FP16 node by node and keeps a node in FP32 when its reference values (from a real FP32 run) exceed
``DATA_MAX`` or its initializers exceed FP16's range. On top of that, LayerNormalization stays FP32 by
default: its statistics square the activations (FP16 overflows beyond 256) and TensorRT warns about
FP16 LayerNorm for the same reason; so do the nodes of a norm written out op by op (MS-MLP's
channels-first deployment form: ReduceMean, Sub, Mul, Sqrt, Div). Which modules those are the model's
family declares (``FamilySpec.fp32_norms``); the export records their node scopes in the graph
(:func:`msmlp.exporters.onnx_io.read_layout`). Graph inputs and outputs stay FP32 unless asked
otherwise, so the FP16 graph is a drop-in replacement for the FP32 one.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from msmlp.errors import ExportError, InputError, require
from msmlp.exporters.modelopt_common import MODELOPT_INSTALL, modelopt_quiet, modelopt_version
from msmlp.exporters.onnx_io import (
    load_graph,
    read_layout,
    resolve_keep_fp32,
    save_converted,
)
from msmlp.log import logger

FP16_KEEP_FP32_OPS: tuple[str, ...] = ("LayerNormalization",)
DATA_MAX = 512.0  # AutoCast's default: 128x headroom below FP16's 65504 for inputs it has not seen
REFERENCE_INPUTS = 4  # AutoCast keeps every intermediate tensor of the reference run in memory


def convert_fp16(
    src: Path,
    dst: Path,
    *,
    keep_fp32: Sequence[str] = (),
    keep_io_types: bool = True,
    reference: np.ndarray | None = None,
) -> dict:
    """Write an FP16 version of the ONNX graph ``src`` to ``dst``; return what was done, for the report.

    ``keep_fp32``: node names (or ``re.match`` patterns) and op types to keep in FP32, added to
    ``FP16_KEEP_FP32_OPS``. ``reference``: preprocessed inputs for AutoCast's range check (the first
    ``REFERENCE_INPUTS`` are used); ``None`` uses the built-in sample photos.
    """
    src, dst = Path(src), Path(dst)
    require("modelopt.onnx.autocast", "FP16 conversion", MODELOPT_INSTALL)
    graph = load_graph(src)
    op_types, names = resolve_keep_fp32(graph, [*FP16_KEEP_FP32_OPS, *keep_fp32], purpose="FP16")
    norms = [n for n in written_out_norm_nodes(graph) if n not in names]
    ref = _reference_inputs(graph, reference)
    start = time.perf_counter()
    model = _run_autocast(src, graph, ref, op_types, [*names, *norms], keep_io_types)
    seconds = time.perf_counter() - start
    save_converted(graph, model, dst, precision="fp16", src=src)
    summary = precision_summary(model)
    logger.info(
        "fp16: %d nodes FP16, %d kept FP32 (%s) in %.1f s",
        summary["nodes_fp16"],
        summary["nodes_fp32"],
        _counts(summary["fp32_op_types"]),
        seconds,
    )
    return {
        "precision": "fp16",
        "tool": f"modelopt {modelopt_version()} autocast",
        "keep_io_types": keep_io_types,
        "keep_fp32_op_types": op_types,
        "keep_fp32_nodes": names,
        "written_out_norm_nodes_fp32": len(norms),
        "data_max": DATA_MAX,
        "reference_inputs": int(ref.shape[0]),
        **summary,
        "seconds": round(seconds, 2),
        "bytes": dst.stat().st_size,
    }


def _run_autocast(
    src: Path,
    graph: onnx.ModelProto,
    reference: np.ndarray,
    op_types: list[str],
    nodes: list[str],
    keep_io_types: bool,
) -> onnx.ModelProto:
    autocast = require("modelopt.onnx.autocast", "FP16 conversion", MODELOPT_INSTALL)
    with tempfile.TemporaryDirectory(prefix="msmlp-fp16-") as tmp, modelopt_quiet():
        npz = Path(tmp) / "reference.npz"
        np.savez(npz, **{graph.graph.input[0].name: reference})
        try:
            return autocast.convert_to_mixed_precision(
                onnx_path=str(src),
                low_precision_type="fp16",
                op_types_to_exclude=op_types,
                nodes_to_exclude=[f"^{re.escape(n)}$" for n in nodes],
                data_max=DATA_MAX,
                keep_io_types=keep_io_types,
                calibration_data=str(npz),
                providers=["cpu"],
            )
        except Exception as exc:
            raise ExportError(f"FP16 conversion of {src} failed in ModelOpt AutoCast: {exc}") from exc


def written_out_norm_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes of the norm modules the family declares FP32, other than LayerNormalization nodes (kept by
    op type): a norm written out op by op, which FP16 breaks as it breaks LayerNormalization."""
    layout = read_layout(model)
    return [
        n.name for n in model.graph.node if n.op_type not in FP16_KEEP_FP32_OPS and layout.keeps_fp32(n.name)
    ]


def precision_summary(model: onnx.ModelProto) -> dict:
    """How many compute nodes run in FP16 and in FP32, and which op types stayed FP32."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # pragma: no cover - shape inference is best effort for the report
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    fp16, fp32 = Counter(), Counter()
    skip = {"Cast", "Constant", "QuantizeLinear", "DequantizeLinear"}
    for node in g.node:
        if node.op_type in skip:
            continue
        kinds = {types.get(o) for o in node.output}
        if onnx.TensorProto.FLOAT16 in kinds:
            fp16[node.op_type] += 1
        elif onnx.TensorProto.FLOAT in kinds:
            fp32[node.op_type] += 1
    return {
        "nodes_fp16": sum(fp16.values()),
        "nodes_fp32": sum(fp32.values()),
        "fp32_op_types": dict(fp32.most_common()),
        "casts": sum(1 for n in g.node if n.op_type == "Cast"),
    }


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.items()) or "none"


def _reference_inputs(model: onnx.ModelProto, reference: np.ndarray | None) -> np.ndarray:
    """Real images for AutoCast's range check: random inputs would underestimate activations."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if reference is None:
        from msmlp.data.transforms import builtin_images, preprocess
        from msmlp.models.registry import DeployConfig

        if len(dims) != 4 or not all(dims[1:]):
            raise InputError(f"cannot make reference images for input shape {dims}; pass reference=")
        reference = preprocess(builtin_images()[:REFERENCE_INPUTS], DeployConfig(input_size=tuple(dims[1:])))
    reference = np.ascontiguousarray(reference[:REFERENCE_INPUTS], dtype=np.float32)
    if reference.ndim != len(dims) or any(d and d != r for d, r in zip(dims[1:], reference.shape[1:])):
        raise InputError(f"reference inputs of shape {reference.shape} do not fit the graph input {dims}")
    return reference
