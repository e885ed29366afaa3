"""The ONNX form of the shift plugins, and its lowering back to Slice/Concat for CPU verification.

A plugin node is what TensorRT's ONNX parser maps to a Python-defined plugin: the op type is the
plugin's name, the node's domain and its ``plugin_namespace`` attribute both carry the namespace (the
parser reads the attribute since TensorRT 10.9 and the domain since 10.10), and ``aot: 1`` selects the
ahead-of-time implementation so the engine holds the compiled kernel and needs no Python at run time.

- ``msmlp.GroupRoll(x)``, x: N,C,H,W; ints ``chunks`` (channel group sizes), ints ``shifts`` (one per
  group), int ``axis`` (2 = H, 3 = W): group i rolled circularly by shifts[i] (``torch.roll``).
- ``msmlp.EdgeShift(x)``, x: N,H,W,C; int ``pattern`` (1 or 2, S2-MLPv2's shift1 / shift2): channel
  quarters move one token, the vacated border row or column keeps its values.

ONNX Runtime knows neither op, so :func:`lower_plugin_nodes` rewrites them into the Slice/Concat form
the models export by default; running both graphs on the same input checks the plugin export.
"""

from __future__ import annotations

import onnx
from onnx import helper

from msmlp.errors import ExportError
from msmlp.models.layers import SHIFT1, SHIFT2, quarter_bounds

NAMESPACE = "msmlp"
GROUP_ROLL = "GroupRoll"
EDGE_SHIFT = "EdgeShift"
PLUGIN_OPS = (GROUP_ROLL, EDGE_SHIFT)
PATTERNS = {1: SHIFT1, 2: SHIFT2}
_END = 2**63 - 1  # Slice "to the end"


def pattern_id(pattern) -> int:
    """The ``pattern`` attribute of an edge shift: 1 for SHIFT1, 2 for SHIFT2."""
    for key, value in PATTERNS.items():
        if tuple(pattern) == value:
            return key
    raise ExportError(f"edge shift pattern {tuple(pattern)!r} has no plugin form; expected SHIFT1 or SHIFT2")


def is_plugin_node(node: onnx.NodeProto) -> bool:
    return node.domain == NAMESPACE and node.op_type in PLUGIN_OPS


def lower_plugin_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every plugin node replaced by its Slice/Concat equivalent."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    sizes = _static_sizes(out)
    nodes: list[onnx.NodeProto] = []
    lowered = 0
    for node in out.graph.node:
        if not is_plugin_node(node):
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        builder = _Builder(node.name or node.output[0], sizes)
        if node.op_type == GROUP_ROLL:
            builder.group_roll(node.input[0], node.output[0], attrs, sizes.get(node.input[0]))
        else:
            builder.edge_shift(node.input[0], node.output[0], int(attrs["pattern"]))
        nodes.extend(builder.nodes)
        lowered += 1
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept = [o for o in out.opset_import if o.domain != NAMESPACE]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    onnx.checker.check_model(out)
    return out


def _static_sizes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor shapes, carried through plugin nodes (shape-preserving) that ONNX shape inference skips."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    while True:
        inferred = onnx.shape_inference.infer_shapes(probe)
        values = (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
        known = {v.name: v for v in values if v.type.tensor_type.HasField("shape")}
        added = False
        for node in probe.graph.node:
            if is_plugin_node(node) and node.input[0] in known and node.output[0] not in known:
                copy = probe.graph.value_info.add()
                copy.CopyFrom(known[node.input[0]])
                copy.name = node.output[0]
                added = True
        if not added:
            return {
                name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                for name, v in known.items()
            }


class _Builder:
    """Emits the nodes of one lowered plugin node, with names derived from ``tag``."""

    def __init__(self, tag: str, sizes: dict[str, list[int | None]]) -> None:
        self.tag, self.sizes, self.count = tag, sizes, 0
        self.nodes: list[onnx.NodeProto] = []

    def _name(self) -> str:
        self.count += 1
        return f"{self.tag}_lowered{self.count}"

    def _const(self, values: list[int]) -> str:
        name = self._name()
        self.nodes.append(
            helper.make_node(
                "Constant",
                [],
                [name],
                value=helper.make_tensor(name, onnx.TensorProto.INT64, [len(values)], values),
            )
        )
        return name

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        out = self._name()
        inputs = [x, self._const([start]), self._const([end]), self._const([axis])]
        self.nodes.append(helper.make_node("Slice", inputs, [out], name=out))
        return out

    def concat(self, parts: list[str], axis: int, out: str | None = None) -> str:
        out = out or self._name()
        self.nodes.append(helper.make_node("Concat", parts, [out], axis=axis, name=self._name()))
        return out

    def roll(self, x: str, axis: int, shift: int, size: int | None) -> str:
        if size is not None:
            shift %= size
        elif abs(shift) > 2:  # exact without the size only while |shift| <= 2 (any size >= 1)
            raise ExportError(
                f"cannot lower roll by {shift} on an axis of unknown size; export with a static spatial size"
            )
        if shift == 0:
            return x
        # torch.roll: the last `shift` entries move to the front (negative: the first -shift to the back)
        tail, head = (self.slice(x, axis, -shift, _END), self.slice(x, axis, 0, -shift))
        return self.concat([tail, head], axis)

    def group_roll(self, x: str, out: str, attrs: dict, shape: list[int | None] | None) -> None:
        axis = int(attrs["axis"])
        size = shape[axis] if shape and len(shape) > axis else None
        parts, start = [], 0
        for chunk, shift in zip(attrs["chunks"], attrs["shifts"]):
            group = self.slice(x, 1, start, start + int(chunk))
            parts.append(self.roll(group, axis, int(shift), size))
            start += int(chunk)
        self.concat(parts, 1, out)

    def edge_shift(self, x: str, out: str, pattern: int) -> None:
        if pattern not in PATTERNS:
            raise ExportError(f"EdgeShift pattern {pattern} is unknown; expected 1 or 2")
        # quarter bounds need C: read it from the graph if known, else the node cannot be lowered
        channels = self._channels(x)
        bounds = quarter_bounds(channels)
        parts = []
        for g, (axis, step) in enumerate(PATTERNS[pattern]):
            if bounds[g + 1] == bounds[g]:
                continue
            q = self.slice(x, 3, bounds[g], bounds[g + 1])
            if step > 0:  # row 0 stays, row i takes row i-1
                pieces = [self.slice(q, axis, 0, 1), self.slice(q, axis, 0, -1)]
            else:
                pieces = [self.slice(q, axis, 1, _END), self.slice(q, axis, -1, _END)]
            parts.append(self.concat(pieces, axis))
        self.concat(parts, 3, out)

    def _channels(self, x: str) -> int:
        shape = self.sizes.get(x)
        if not shape or len(shape) != 4 or shape[3] is None:
            raise ExportError(f"cannot lower EdgeShift on {x!r}: its channel count is not known in the graph")
        return shape[3]
