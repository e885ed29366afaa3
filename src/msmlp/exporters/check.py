"""Compatibility check run on every exported graph: will TensorRT and ONNX Runtime take it, and take it well?

Each rule is a small function ``rule(graph) -> list[str]`` (one message per problem). :func:`check_graph`
runs them all, counts nodes per op type and raises :class:`ExportError` naming every broken rule.

Sources: the op list is the "Y" column of onnx-tensorrt's ``docs/operators.md`` (TensorRT 10.0), minus
the ops denied below; the opset range is TensorRT 11's (9..25, NVIDIA's ONNX opset guide).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from msmlp.errors import ExportError, InputError
from msmlp.features import META_KEY, FeatureLayout

# Ops the TensorRT ONNX parser imports and that are fine in an inference graph. Q/DQ and Cast are here
# for the FP16/INT8 graphs that ModelOpt writes.
_TENSORRT_OPS_TEXT = """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization HardSigmoid HardSwish Hardmax Identity InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization LpPool LRN MatMul Max
MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg Not OneHot Or Pad ParametricSoftplus Pow
PRelu QuantizeLinear Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round ScaledTanh Selu
Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
"""
TENSORRT_OPS: frozenset[str] = frozenset(_TENSORRT_OPS_TEXT.split())

# Ops refused even where a parser accepts them: each says why, and what to do instead.
DENIED_OPS: dict[str, str] = {
    "Roll": "not a standard ONNX op; export the shift with shift_form='sliced' (Slice/Concat)",
    "ScatterND": "a slice-assignment shift; TensorRT runs it as a slow scatter kernel; use shift_form='sliced'",
    "ScatterElements": "scatter kernels are slow and block fusion; express the shift with Slice/Concat",
    "Scatter": "deprecated scatter op; express the shift with Slice/Concat",
    "GatherND": "index-tensor gathers are slow and block fusion; use Slice",
    "Loop": "control flow: TensorRT unrolls or serialises it; export a static graph",
    "If": "control flow left by the tracer; export a static graph",
    "Scan": "control flow: export a static graph",
    "NonZero": "data-dependent output shape; TensorRT cannot plan memory for it",
    "Unique": "data-dependent output shape",
    "Compress": "data-dependent output shape",
    "RandomNormal": "random ops do not belong in an inference graph",
    "RandomUniform": "random ops do not belong in an inference graph",
    "RandomNormalLike": "random ops do not belong in an inference graph",
    "RandomUniformLike": "random ops do not belong in an inference graph",
}

OPSET_RANGE = (9, 25)
IO_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
}
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


@dataclass
class CheckReport:
    """What the graph holds (node counts per op type, I/O shapes) and which rules it breaks."""

    source: str
    opset: int | None
    op_counts: dict[str, int]
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def node_count(self) -> int:
        return sum(self.op_counts.values())

    def summary(self) -> str:
        """One line: total nodes, then the op types by count."""
        ops = ", ".join(f"{op} {n}" for op, n in self.op_counts.items())
        return f"{self.node_count} nodes ({ops})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "opset": self.opset,
            "nodes": self.node_count,
            "op_counts": self.op_counts,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "violations": [str(v) for v in self.violations],
        }


# ----------------------------------------------------------------------------------------- rules


def no_denied_ops(graph: onnx.ModelProto) -> list[str]:
    """No Roll, Scatter*, GatherND, control flow or data-dependent shapes (see DENIED_OPS)."""
    counts = op_counts(graph)
    return [f"{counts[op]} {op} node(s): {why}" for op, why in DENIED_OPS.items() if op in counts]


def ops_supported_by_tensorrt(graph: onnx.ModelProto, extra_ops: Iterable[str] = ()) -> list[str]:
    """Every op is in TENSORRT_OPS, or in ``extra_ops`` (``domain::Op`` of a plugin the engine will load)."""
    allowed = TENSORRT_OPS | set(extra_ops)
    unknown = sorted(op for op in op_counts(graph) if op not in allowed and op not in DENIED_OPS)
    if not unknown:
        return []
    return [
        f"op type(s) {', '.join(unknown)} are not in the TensorRT ONNX parser's supported set; "
        "custom-domain ops need a TensorRT plugin (pass it as an extra op)"
    ]


def batch_axis_dynamic(graph: onnx.ModelProto) -> list[str]:
    """Axis 0 of every input and output is symbolic; every other axis is a fixed positive size, except
    H and W (axes 2 and 3) of a feature graph exported with a size profile (``msmlp.features``)."""
    problems = []
    spatial = _declares_size_profile(graph)
    for kind, values in (("input", graph.graph.input), ("output", graph.graph.output)):
        for value in values:
            dims = _shape(value)
            if not dims:
                problems.append(f"{kind} {value.name!r} has no shape")
                continue
            if not isinstance(dims[0], str):
                problems.append(
                    f"{kind} {value.name!r} has a fixed batch axis {dims[0]} (shape {dims}); expected a named axis"
                )
            fixed = [d for i, d in enumerate(dims) if i > 0 and not (spatial and len(dims) == 4 and i >= 2)]
            if [d for d in fixed if not (isinstance(d, int) and d > 0)]:
                allowed = "axis 0 (batch) and H, W" if spatial else "only axis 0"
                problems.append(
                    f"{kind} {value.name!r} has dynamic non-batch axes (shape {dims}); {allowed} may vary"
                )
    return problems


def _declares_size_profile(graph: onnx.ModelProto) -> bool:
    """Whether the graph's ``msmlp.features`` metadata records a size profile (dynamic H and W); unreadable
    metadata declares none, so the dynamic axes are reported."""
    text = next((p.value for p in graph.metadata_props if p.key == f"msmlp.{META_KEY}"), None)
    try:
        layout = FeatureLayout.from_metadata(text)
    except InputError:
        return False
    return layout is not None and layout.dynamic


def io_types_supported(graph: onnx.ModelProto) -> list[str]:
    """Inputs and outputs are float32/float16/bfloat16 tensors (what engines and the runtime feed)."""
    problems = []
    for value in (*graph.graph.input, *graph.graph.output):
        elem = value.type.tensor_type.elem_type
        if elem not in IO_TYPES:
            problems.append(
                f"{value.name!r} has element type {onnx.TensorProto.DataType.Name(elem)}; expected float"
            )
    return problems


def opset_in_range(graph: onnx.ModelProto) -> list[str]:
    """The default-domain opset is within what the TensorRT parser reads."""
    opset = _opset(graph)
    lo, hi = OPSET_RANGE
    if opset is None:
        return ["the graph declares no default-domain opset"]
    return [] if lo <= opset <= hi else [f"opset {opset} is outside TensorRT's supported {lo}..{hi}"]


RULES: tuple[Callable[[onnx.ModelProto], list[str]], ...] = (
    no_denied_ops,
    ops_supported_by_tensorrt,
    batch_axis_dynamic,
    io_types_supported,
    opset_in_range,
)


# ----------------------------------------------------------------------------------------- check


def check_graph(
    source: str | Path | onnx.ModelProto,
    *,
    extra_ops: Iterable[str] = (),
    raise_on_failure: bool = True,
) -> CheckReport:
    """Run every rule on a graph (a path or a loaded model); raise ExportError if any is broken."""
    graph, label = _load(source)
    extra = tuple(extra_ops)
    report = CheckReport(
        source=label,
        opset=_opset(graph),
        op_counts=dict(op_counts(graph).most_common()),
        inputs={v.name: _shape(v) for v in graph.graph.input if v.name not in _initializer_names(graph)},
        outputs={v.name: _shape(v) for v in graph.graph.output},
    )
    for rule in RULES:
        messages = rule(graph, extra) if rule is ops_supported_by_tensorrt else rule(graph)
        report.violations.extend(Violation(rule.__name__, m) for m in messages)
    if raise_on_failure and not report.ok:
        details = "; ".join(str(v) for v in report.violations)
        raise ExportError(f"graph check failed for {label}: {details}")
    return report


def _load(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        return source, "the graph"
    path = Path(source)
    if not path.is_file():
        raise ExportError(f"cannot check {str(path)!r}: no such file")
    try:
        return onnx.load(path, load_external_data=False), str(path)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(
            f"cannot read {str(path)!r} as ONNX ({type(exc).__name__}); is it an .onnx file?"
        ) from exc


def op_counts(graph: onnx.ModelProto) -> Counter[str]:
    """Node count per op type (``domain::Op`` outside the default domain), main graph only."""
    return Counter(
        n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}" for n in graph.graph.node
    )


def _opset(graph: onnx.ModelProto) -> int | None:
    versions = [o.version for o in graph.opset_import if o.domain in DEFAULT_DOMAINS]
    return versions[0] if versions else None


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _initializer_names(graph: onnx.ModelProto) -> set[str]:
    return {t.name for t in graph.graph.initializer}
