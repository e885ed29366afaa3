"""FP16 graphs through NVIDIA ModelOpt AutoCast, with FP32 kept where FP16 would overflow.

TensorRT 11 has no FP16 builder flag: precision lives in the ONNX graph. AutoCast converts the graph to
FP16 node by node and keeps a node in FP32 when its reference values (from a real FP32 run) exceed
``DATA_MAX`` or its initializers exceed FP16's range. On top of that, LayerNormalization stays FP32 by
default: its statistics square the activations (FP16 overflows beyond 256) and TensorRT warns about
FP16 LayerNorm for the same reason; so do the nodes of a LayerNorm written out op by op (MS-MLP's
channels-first deployment form: ReduceMean, Sub, Mul, Sqrt, Div under a ``norm`` scope). Graph inputs
and outputs stay FP32 unless asked otherwise, so the FP16 graph is a drop-in replacement for the FP32
one.

This module also holds the helpers the INT8 step shares: resolving "keep in FP32" entries (node names
or op types), quieting ModelOpt's console output, summarising a graph's precisions, saving atomically.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from msmlp.errors import ExportError, InputError, require
from msmlp.fileio import atomic_path
from msmlp.log import logger

FP16_KEEP_FP32_OPS: tuple[str, ...] = ("LayerNormalization",)
NORM_SCOPE = re.compile(r"(^|/)norm\d*/")  # exported node names from inside a LayerNorm module
DATA_MAX = 512.0  # AutoCast's default: 128x headroom below FP16's 65504 for inputs it has not seen
REFERENCE_INPUTS = 4  # AutoCast keeps every intermediate tensor of the reference run in memory
MODELOPT_INSTALL = "pip install 'nvidia-modelopt[onnx]'"
_PROTOBUF_LIMIT = 2**31 - 1


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
    carry_metadata(graph, model, precision="fp16")
    check_valid(model, f"FP16 graph from {src}")
    save_model_atomic(model, dst)
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
        "tool": f"modelopt {_modelopt_version()} autocast",
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
    """Nodes exported from inside a LayerNorm module other than one LayerNormalization node: a
    LayerNorm written out op by op, which FP16 breaks as it breaks LayerNormalization."""
    return [
        n.name for n in model.graph.node if n.op_type != "LayerNormalization" and NORM_SCOPE.search(n.name)
    ]


# -- shared with the INT8 step -------------------------------------------------------------------------


def load_graph(path: Path) -> onnx.ModelProto:
    """The graph structure (no external weights) of an existing ONNX file, or a clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file {str(path)!r} does not exist; export one first (msmlp-export)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{str(path)!r} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    if len(model.graph.input) != 1:
        names = [i.name for i in model.graph.input]
        raise InputError(f"{path} has inputs {names}; msmlp graphs have exactly one image input")
    return model


def resolve_keep_fp32(
    model: onnx.ModelProto, entries: Sequence[str], *, purpose: str
) -> tuple[list[str], list[str]]:
    """Split "keep in FP32" entries into op types and concrete node names.

    An entry is an op type if nodes of that type exist, else a node name or ``re.match`` pattern that
    must match at least one node. Op types absent from the graph are ignored with a log line.
    """
    present_ops = {n.op_type for n in model.graph.node}
    names = [n.name for n in model.graph.node if n.name]
    op_types: list[str] = []
    nodes: list[str] = []
    for entry in dict.fromkeys(entries):
        if entry in present_ops:
            op_types.append(entry)
        elif onnx.defs.has(entry):
            logger.debug("%s: op type %s is not in the graph; nothing to keep", purpose, entry)
        else:
            matched = _match_names(entry, names)
            if not matched:
                raise InputError(_no_match_message(entry, present_ops, names, purpose))
            nodes.extend(n for n in matched if n not in nodes)
    return op_types, nodes


def _match_names(pattern: str, names: list[str]) -> list[str]:
    if pattern in names:
        return [pattern]
    try:
        rx = re.compile(pattern)
    except re.error:
        return []
    return [n for n in names if rx.match(n)]


def _no_match_message(entry: str, ops: set[str], names: list[str], purpose: str) -> str:
    import difflib

    close = difflib.get_close_matches(entry, sorted(ops) + names, n=3, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(close)}?" if close else f"op types in the graph: {', '.join(sorted(ops))}"
    )
    return f"{purpose}: keep-FP32 entry {entry!r} is neither an op type nor a node name in the graph; {hint}"


def carry_metadata(source: onnx.ModelProto, model: onnx.ModelProto, *, precision: str) -> None:
    """Keep the exporter's ``msmlp.*`` metadata (model name, batch profile), which ModelOpt drops."""
    have = {p.key for p in model.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in have and prop.key != "msmlp.precision":
            model.metadata_props.add(key=prop.key, value=prop.value)
    keep = [p for p in model.metadata_props if p.key != "msmlp.precision"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key="msmlp.precision", value=precision)


def check_valid(model: onnx.ModelProto, what: str) -> None:
    """onnx.checker on the result, so a broken graph never reaches disk."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{what} is not a valid ONNX graph: {first}") from exc


def save_model_atomic(model: onnx.ModelProto, dst: Path) -> None:
    """Write next to ``dst`` under a temporary name, then rename: no half-written graph is ever seen."""
    dst = Path(dst)
    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise ExportError(f"the graph for {dst} is over protobuf's 2 GiB limit; no msmlp model is that large")
    try:
        with atomic_path(dst) as tmp:
            onnx.save_model(model, str(tmp))
    except OSError as exc:
        raise ExportError(f"cannot write {dst}: {exc}") from exc


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


def _modelopt_version() -> str:
    from importlib.metadata import version

    return version("nvidia-modelopt")


@contextlib.contextmanager
def modelopt_quiet() -> Iterator[None]:
    """Route ModelOpt's logging through ours and keep its console output off the user's terminal.

    ModelOpt installs its own stdout handlers (again on every ``quantize`` call), logs each node it
    keeps at INFO, and ONNX Runtime's entropy calibrator draws progress bars on stderr. That output is
    captured and logged at DEBUG; ModelOpt's records still reach the application's handlers at WARNING
    and above (DEBUG when msmlp is verbose), minus the known noise in :class:`_DropNoise`.
    """
    import modelopt.onnx.logging_config  # noqa: F401  (installs ModelOpt's handlers; we then detach them)

    level = logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.WARNING
    saved = {name: logging.getLogger(name).level for name in _modelopt_loggers()}
    drop = _DropNoise()
    _detach_handlers(level, drop)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    finally:
        _detach_handlers(None, None)
        for name in _modelopt_loggers():
            logging.getLogger(name).removeFilter(drop)
        for name, lvl in saved.items():
            logging.getLogger(name).setLevel(lvl)
        if captured.getvalue().strip():
            logger.debug("modelopt output:\n%s", captured.getvalue().rstrip())


def _modelopt_loggers() -> list[str]:
    return [n for n in list(logging.root.manager.loggerDict) if n.startswith("modelopt")]


def _detach_handlers(level: int | None, drop: logging.Filter | None) -> None:
    """Remove ModelOpt's own handlers so its records only propagate to the application's."""
    for name in _modelopt_loggers():
        lg = logging.getLogger(name)
        for handler in lg.handlers[:]:
            lg.removeHandler(handler)
        lg.propagate = True
        if level is not None:
            lg.setLevel(level)
        if drop is not None:
            lg.addFilter(drop)


class _DropNoise(logging.Filter):
    """Messages that are expected here and mean nothing to a user: demoted to DEBUG."""

    NOISE = (
        "Failed to get GPU count",  # NVML is absent on a CPU-only machine
        "Shared constants were detected",  # ModelOpt duplicating shared weights before it rewrites them
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.NOISE):
            logger.debug("modelopt: %s", message)
            return False
        return True
