"""Read what the runtime needs from an ONNX file's protobuf without the ``onnx`` package.

Serving an exported graph must not need the export toolchain (``onnx`` pulls protobuf and the checker):
opening a graph only wants its inputs, outputs, op types, initializer types and metadata. This walks
the protobuf wire format for those fields of ``ModelProto`` (onnx/onnx.proto) and skips the rest,
weights included, by length. Anything malformed is reported as one :class:`EngineError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from msmlp.errors import EngineError

# Field numbers of onnx.proto (ONNX IR version 3 and later); wire types of protobuf.
_MODEL_IR_VERSION, _MODEL_GRAPH, _MODEL_METADATA = 1, 7, 14
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_OP_TYPE = 4
_TENSOR_DATA_TYPE, _TENSOR_NAME = 2, 8
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class DecodeError(ValueError):
    """The bytes are not a protobuf message of the expected shape (named as protobuf names it)."""


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output: name, ONNX element type, dims (``-1`` where symbolic or unknown)."""

    name: str
    elem_type: int
    dims: tuple[int, ...]


@dataclass(frozen=True)
class OnnxHeader:
    """The parts of an ONNX model that opening it for inference reads."""

    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    op_types: frozenset[str]
    initializers: frozenset[str]
    initializer_types: frozenset[int]
    metadata: dict[str, str]

    @property
    def feeds(self) -> tuple[ValueInfo, ...]:
        """Inputs the caller feeds: old exporters list initializers among the graph inputs too."""
        return tuple(vi for vi in self.inputs if vi.name not in self.initializers)


def read_onnx_header(path: Path) -> OnnxHeader:
    """The header of the ONNX model at ``path``, or an :class:`EngineError` naming the file."""
    try:
        return _model(memoryview(path.read_bytes()))
    except DecodeError as exc:
        raise EngineError(
            f"{str(path)!r} is not a readable ONNX model ({exc}); re-export it with msmlp-export"
        ) from exc


def _model(buf: memoryview) -> OnnxHeader:
    graph: memoryview | None = None
    ir_version = None
    metadata: dict[str, str] = {}
    for field, value in _fields(buf):
        if field == _MODEL_IR_VERSION:
            ir_version = value
        elif field == _MODEL_GRAPH and isinstance(value, memoryview):
            graph = value
        elif field == _MODEL_METADATA and isinstance(value, memoryview):
            entry = _strings(value)
            metadata[entry.get(1, "")] = entry.get(2, "")
    if ir_version is None or graph is None:
        raise DecodeError("no IR version or no graph")
    return _graph(graph, metadata)


def _graph(buf: memoryview, metadata: dict[str, str]) -> OnnxHeader:
    inputs: list[ValueInfo] = []
    outputs: list[ValueInfo] = []
    ops: set[str] = set()
    names: set[str] = set()
    types: set[int] = set()
    for field, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if field == _GRAPH_NODE:
            op = _strings(value, (_NODE_OP_TYPE,)).get(_NODE_OP_TYPE)
            if op:
                ops.add(op)
        elif field == _GRAPH_INITIALIZER:
            for sub, item in _fields(value):
                if sub == _TENSOR_DATA_TYPE and isinstance(item, int):
                    types.add(item)
                elif sub == _TENSOR_NAME and isinstance(item, memoryview):
                    names.add(_text(item))
        elif field in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            (inputs if field == _GRAPH_INPUT else outputs).append(_value_info(value))
    return OnnxHeader(
        tuple(inputs), tuple(outputs), frozenset(ops), frozenset(names), frozenset(types), metadata
    )


def _value_info(buf: memoryview) -> ValueInfo:
    """ValueInfoProto: name (1), type (2) -> TypeProto.tensor_type (1) -> elem_type (1), shape (2)."""
    name, elem_type, dims = "", 0, []
    for field, value in _fields(buf):
        if field == 1 and isinstance(value, memoryview):
            name = _text(value)
        elif field == 2 and isinstance(value, memoryview):
            for kind, tensor in _fields(value):
                if kind != 1 or not isinstance(tensor, memoryview):
                    continue  # sequence, map or optional types: no tensor shape to report
                for sub, item in _fields(tensor):
                    if sub == 1 and isinstance(item, int):
                        elem_type = item
                    elif sub == 2 and isinstance(item, memoryview):
                        dims = [_dim(d) for f, d in _fields(item) if f == 1 and isinstance(d, memoryview)]
    return ValueInfo(name, elem_type, tuple(dims))


def _dim(buf: memoryview) -> int:
    """TensorShapeProto.Dimension: dim_value (1) when fixed and positive, else -1 (dim_param, unknown)."""
    for field, value in _fields(buf):
        if field == 1 and isinstance(value, int):
            return value if 0 < value < 1 << 63 else -1
    return -1


def _strings(buf: memoryview, wanted: tuple[int, ...] = (1, 2)) -> dict[int, str]:
    return {f: _text(v) for f, v in _fields(buf) if f in wanted and isinstance(v, memoryview)}


def _text(buf: memoryview) -> str:
    try:
        return bytes(buf).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("a name is not UTF-8") from exc


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one message: varints as ints, length-delimited fields as views."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise DecodeError(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield field, value
        elif wire == _BYTES:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise DecodeError(f"a field of {size} bytes runs past the end (truncated file?)")
            yield field, buf[pos : pos + size]
            pos += size
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise DecodeError("a fixed-size field runs past the end (truncated file?)")
        else:
            raise DecodeError(f"wire type {wire} at byte {pos}")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DecodeError("a varint runs past the end (truncated file?)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
