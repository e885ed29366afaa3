"""INT8 graphs through NVIDIA ModelOpt ONNX post-training quantization (explicit Q/DQ).

TensorRT 11 has no INT8 builder flag or calibrator: the ONNX graph carries QuantizeLinear /
DequantizeLinear pairs with their scales, and TensorRT fuses them. ModelOpt inserts them (symmetric,
per-channel weight scales, per-tensor activation scales) and calibrates the activation ranges by
running the FP32 graph on ONNX Runtime's CPU provider, so this step needs no GPU.

ModelOpt writes intermediate files next to its input and output (and rewrites its input in place); it
runs here on a copy in a private temporary folder, so the user's folders only ever receive the
finished graph.

Two placements (``target``). ``tensorrt`` is ModelOpt's default heuristic, written for TensorRT's
fusions: Q/DQ also on residual Adds, LayerNorm inputs, Concat/Slice of the shifts. On a CPU those extra
Q/DQ pairs are paid for one by one: OpenVINO's INT8 GEMMs beat BF16, but the FP32 Adds, Reorders and
unfused scale ops around them eat much of the gain (measured, see docs/performance.md). ``cpu`` asks
ModelOpt to quantize only the inputs of MatMul/Gemm/Conv (``op_types_to_quantize``): per-channel INT8
weights, per-tensor activations, nothing on Add/LayerNormalization/Concat/Slice, so OpenVINO and ONNX
Runtime fold the dequantize scale, bias and residual into the INT8 GEMM. Activations stay symmetric s8
either way: ModelOpt's INT8 mode has no asymmetric activations (its ``use_zero_point`` is for INT4 only).
"""

from __future__ import annotations

import logging
import re
import shutil
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
    resolve_keep_fp32,
    save_converted,
)
from msmlp.log import logger

METHODS = ("max", "entropy")
HIGH_PRECISIONS = ("fp32", "fp16")
TARGETS = ("tensorrt", "cpu")
CPU_OP_TYPES = ("MatMul", "Gemm", "Conv")  # the only consumers of Q/DQ in the ``cpu`` placement
INT8_KEEP_FP32_OPS: tuple[str, ...] = ()
CALIB_BATCH = 8  # inputs per ONNX Runtime calibration run: batched runs beat singles (docs/performance.md)


def quantize_int8(
    src: Path,
    dst: Path,
    calib: np.ndarray,
    *,
    method: str = "max",
    keep_fp32: Sequence[str] = (),
    high_precision: str = "fp32",
    target: str = "tensorrt",
) -> dict:
    """Write an INT8 Q/DQ version of ``src`` to ``dst``, calibrated on ``calib`` (N,C,H,W float32).

    ``keep_fp32``: node names (or ``re.match`` patterns) and op types left unquantized.
    ``high_precision``: the type of the unquantized remainder; ``fp32`` runs well on CPUs and keeps
    LayerNorm exact, ``fp16`` suits GPUs.
    ``target``: where the Q/DQ pairs go (module docstring): ``tensorrt`` (ModelOpt's placement for
    TensorRT) or ``cpu`` (only on MatMul/Gemm/Conv inputs, for OpenVINO and ONNX Runtime).
    """
    src, dst = Path(src), Path(dst)
    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    if high_precision not in HIGH_PRECISIONS:
        raise InputError(f"high precision {high_precision!r} is not one of {', '.join(HIGH_PRECISIONS)}")
    if target not in TARGETS:
        raise InputError(f"INT8 target {target!r} is not one of {', '.join(TARGETS)}")
    require("modelopt.onnx.quantization", "INT8 quantization", MODELOPT_INSTALL)
    graph = load_graph(src)
    calib = _check_calib(graph, calib)
    op_types, names = resolve_keep_fp32(graph, [*INT8_KEEP_FP32_OPS, *keep_fp32], purpose="INT8")
    kept = {
        reason: [n for n in nodes if n not in names] for reason, nodes in high_precision_nodes(graph).items()
    }
    auto = [n for nodes in kept.values() for n in nodes]
    start = time.perf_counter()
    model = _run_modelopt(src, graph, calib, method, op_types, [*names, *auto], high_precision, target)
    seconds = time.perf_counter() - start
    save_converted(graph, model, dst, precision="int8", src=src)
    summary = qdq_summary(model)
    logger.info(
        "int8 (%s placement): %d activation Q/DQ pairs, %d INT8 weights (%d with per-channel scales), %s calibration "
        "on %d inputs in %.1f s",
        target,
        summary["activation_qdq"],
        summary["weights_quantized"],
        summary["weights_per_channel"],
        method,
        len(calib),
        seconds,
    )
    return {
        "precision": "int8",
        "tool": f"modelopt {modelopt_version()} onnx ptq",
        "target": target,
        "calibration_method": method,
        "calibration_inputs": len(calib),
        "calibration_provider": "CPUExecutionProvider",
        "high_precision": high_precision,
        "keep_fp32_op_types": op_types,
        "keep_fp32_nodes": names,
        "kept_high_precision": {reason: len(nodes) for reason, nodes in kept.items()},
        **summary,
        "seconds": round(seconds, 2),
        "bytes": dst.stat().st_size,
    }


def _run_modelopt(
    src: Path,
    graph: onnx.ModelProto,
    calib: np.ndarray,
    method: str,
    op_types: list[str],
    nodes: list[str],
    high_precision: str,
    target: str,
) -> onnx.ModelProto:
    """ModelOpt PTQ in a private folder (it writes intermediate files next to its input and output,
    and rewrites its input in place), calibrated in batches on the CPU provider."""
    placement: dict = {}
    if target == "cpu":
        # With op types given, ModelOpt quantizes exactly the inputs of those nodes (no output Q/DQ, no
        # partition heuristics) and skips its Concat elimination pass, which only serves TensorRT.
        placement = {"op_types_to_quantize": list(CPU_OP_TYPES), "passes": []}
    mq = require("modelopt.onnx.quantization", "INT8 quantization", MODELOPT_INSTALL)
    batch = min(CALIB_BATCH, len(calib))
    shape = "x".join(str(d) for d in (batch, *calib.shape[1:]))
    with tempfile.TemporaryDirectory(prefix="msmlp-int8-") as tmp, modelopt_quiet():
        work, out = _copy_graph(src, graph, Path(tmp)), Path(tmp) / "int8.onnx"
        try:
            mq.quantize(
                str(work),
                quantize_mode="int8",
                calibration_data=calib,
                calibration_method=method,
                calibration_eps=["cpu"],
                calibration_shapes=f"{graph.graph.input[0].name}:{shape}",
                op_types_to_exclude=op_types or None,
                nodes_to_exclude=[f"^{re.escape(n)}$" for n in nodes] or None,
                high_precision_dtype=high_precision,
                dq_only=True,  # weights stored as INT8 with their scales: a 4x smaller file
                output_path=str(out),
                **placement,
                log_level="DEBUG" if logger.isEnabledFor(logging.DEBUG) else "WARNING",
            )
            return onnx.load(str(out))
        except Exception as exc:
            raise ExportError(f"INT8 quantization of {src} failed in ModelOpt: {exc}") from exc


def high_precision_nodes(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Nodes INT8 hurts more than it helps, which therefore stay in high precision, by reason.

    - ``per_image_gemms``: MatMul/Gemm on one vector per image (pooled features: the head, the split
      attention MLP). Matrix-vector products gain nothing from INT8 and sit where errors are no longer
      averaged out. ModelOpt skips them by itself only when it calibrates with batch 1.
    - ``activation_products``: Mul of two activations (attention weights times features). A per-tensor
      INT8 scale fitted to the largest softmax weight leaves the small weights a few levels at most.
    - ``input_layers``: the convolution on the raw image (the patch embedding): with 3 input channels it
      is a tiny share of the work, and quantizing the pixels costs accuracy for no speed.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises InferenceError, ValidationError, RuntimeError...
        logger.warning(
            "int8: ONNX shape inference failed (%s: %s); the per-image GEMMs cannot be found, so they are "
            "quantized too (verification still judges the result)",
            type(exc).__name__,
            exc,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        inferred = model
    g = inferred.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*g.value_info, *g.input]}
    constants = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    gemms = [
        n.name
        for n in g.node
        if n.op_type in ("MatMul", "Gemm") and n.input[0] not in constants and ranks.get(n.input[0]) == 2
    ]
    products = [n.name for n in g.node if n.op_type == "Mul" and not constants.intersection(n.input)]
    image = g.input[0].name
    first = [n.name for n in g.node if n.op_type in ("Conv", "MatMul", "Gemm") and n.input[0] == image]
    return {"per_image_gemms": gemms, "activation_products": products, "input_layers": first}


def qdq_summary(model: onnx.ModelProto) -> dict:
    """Count the Q/DQ pairs, how weights are scaled, and which op types consume quantized tensors."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    dq = [n for n in g.node if n.op_type == "DequantizeLinear"]
    dq_out = {n.output[0] for n in dq}
    producer = {o: n for n in g.node for o in n.output}
    weights = [
        n for n in dq if n.input[0] in inits or _quantizes_initializer(producer.get(n.input[0]), inits)
    ]
    per_channel = [n for n in weights if _scale_size(n, inits) > 1]
    symmetric = all(_zero_point_is_zero(n, inits) for n in dq)
    consumers = Counter(
        n.op_type
        for n in g.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_out for i in n.input)
    )
    return {
        "activation_qdq": sum(1 for n in g.node if n.op_type == "QuantizeLinear"),
        "dequantize_nodes": len(dq),
        "weights_quantized": len(weights),
        "weights_per_channel": len(per_channel),
        "symmetric": symmetric,
        "quantized_op_types": dict(consumers.most_common()),
    }


def _quantizes_initializer(node: onnx.NodeProto | None, inits: dict) -> bool:
    """A QuantizeLinear of an initializer: ModelOpt's Q/DQ form for weights."""
    return node is not None and node.op_type == "QuantizeLinear" and node.input[0] in inits


def _scale_size(dq: onnx.NodeProto, inits: dict) -> int:
    scale = inits.get(dq.input[1])
    return int(np.prod(scale.dims)) if scale is not None and len(scale.dims) else 1


def _zero_point_is_zero(dq: onnx.NodeProto, inits: dict) -> bool:
    if len(dq.input) < 3 or not dq.input[2]:
        return True
    zp = inits.get(dq.input[2])
    return zp is None or not np.any(onnx.numpy_helper.to_array(zp))


def _check_calib(graph: onnx.ModelProto, calib: np.ndarray) -> np.ndarray:
    if not isinstance(calib, np.ndarray):
        raise InputError(f"calibration data must be a numpy array, got {type(calib).__name__}")
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    if (
        calib.ndim != len(dims)
        or any(d and d != c for d, c in zip(dims[1:], calib.shape[1:]))
        or not len(calib)
    ):
        raise InputError(
            f"calibration data of shape {calib.shape} does not fit the graph input {dims} "
            "(expected N,C,H,W with N >= 1, preprocessed like inference)"
        )
    if not np.isfinite(calib).all():
        raise InputError("calibration data holds NaN or infinite values")
    return np.ascontiguousarray(calib, dtype=np.float32)


def _copy_graph(src: Path, graph: onnx.ModelProto, folder: Path) -> Path:
    """Copy the graph and any external weight files it names into ModelOpt's private work folder."""
    work = folder / "model.onnx"
    shutil.copyfile(src, work)
    locations = {e.value for t in graph.graph.initializer for e in t.external_data if e.key == "location"}
    for loc in locations:
        source = src.parent / loc
        if not source.is_file():
            raise InputError(f"{src} keeps weights in {loc!r}, which is missing next to it")
        target = folder / loc
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return work
