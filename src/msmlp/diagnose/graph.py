"""Graph surgery for diagnosis: which tensors to watch, how to find them in a converted graph, which
layer group a node belongs to, and how to put a group back into high precision.

Converters keep the exporter's node and tensor names (ModelOpt's Q/DQ insertion and AutoCast's Cast
insertion were checked on both families) but wrap tensors in ``QuantizeLinear`` / ``DequantizeLinear``
/ ``Cast`` chains. A reference tensor is found in a candidate graph by its own name, else as the same
output of the same-named node, else as the tensor whose pass-through chain leads back to it.

Layer groups are the ones the model's family declares, as the export recorded them in the graph
(:func:`msmlp.exporters.onnx_io.read_layout`); nothing here reads meaning into module names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from msmlp.errors import InputError
from msmlp.exporters.onnx_io import GraphLayout, load_graph, read_layout

PASS_THROUGH = ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity")
COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
MAJOR_OPS = ("LayerNormalization", "Softmax")


@dataclass(frozen=True)
class Tap:
    """A tensor watched in the reference graph: its name, the node and op that make it, its depth
    (position in topological order among taps) and its layer group."""

    name: str
    node: str
    op: str
    depth: int
    group: str


def load_model(path: str | Path) -> onnx.ModelProto:
    """The whole graph, weights included (external weight files beside it are read too)."""
    model = load_graph(Path(path))  # one clear error for a missing or unreadable file
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        onnx.load_external_data_for_model(model, str(Path(path).parent))
    return model


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output if o}


def constants(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    return {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}


def select_taps(model: onnx.ModelProto) -> list[Tap]:
    """Tensors to compare: each linear layer's output (after its bias Add), LayerNorm and Softmax outputs,
    each residual Add inside a block (block boundaries), and the graph output; in topological order."""
    g = model.graph
    layout = read_layout(model)
    const = constants(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    chosen: list[tuple[str, onnx.NodeProto]] = []
    for n in g.node:
        if n.op_type in COMPUTE_OPS:
            out, node = n.output[0], n
            users = consumers.get(out, [])
            if len(users) == 1 and users[0].op_type == "Add" and const.intersection(users[0].input):
                out, node = users[0].output[0], users[0]  # the bias Add completes the linear layer
            chosen.append((out, node))
        elif n.op_type in MAJOR_OPS or _is_residual(n, const, layout):
            chosen.append((n.output[0], n))
    outputs = {o.name for o in g.output}
    make = producers(model)
    chosen += [(o, make[o]) for o in outputs if o in make]
    seen: set[str] = set()
    taps = []
    for name, node in chosen:
        if name in seen:
            continue
        seen.add(name)
        taps.append(Tap(name, node.name, node.op_type, len(taps), layout.group(node.name)))
    return taps


def _is_residual(node: onnx.NodeProto, const: set[str], layout: GraphLayout) -> bool:
    """An Add of two activations inside a block: a residual (block boundary) or a branch sum."""
    return node.op_type == "Add" and not const.intersection(node.input) and layout.in_block(node.name)


def origin(name: str, make: dict[str, onnx.NodeProto]) -> str:
    """Follow Q/DQ/Cast/Identity producers back to the tensor a converter wrapped."""
    seen = 0
    while name in make and make[name].op_type in PASS_THROUGH and seen < 64:
        name, seen = make[name].input[0], seen + 1
    return name


def match_taps(reference: onnx.ModelProto, taps: Sequence[Tap], candidate: onnx.ModelProto) -> dict[str, str]:
    """Reference tap name -> the candidate tensor holding the same value (taps without one are left out)."""
    ref_make, cand_make = producers(reference), producers(candidate)
    by_node = {n.name: n for n in candidate.graph.node if n.name}
    by_origin: dict[str, list[str]] = {}
    for tensor in cand_make:
        by_origin.setdefault(origin(tensor, cand_make), []).append(tensor)
    found = {}
    for tap in taps:
        if tap.name in cand_make:
            found[tap.name] = tap.name
            continue
        node = by_node.get(tap.node)
        ref_node = ref_make.get(tap.name)
        if node is not None and ref_node is not None and node.op_type == ref_node.op_type:
            found[tap.name] = node.output[list(ref_node.output).index(tap.name)]
            continue
        wrapped = by_origin.get(origin(tap.name, ref_make), [])
        if wrapped:  # the shortest chain: closest to the op that computed it
            found[tap.name] = min(wrapped, key=lambda t: (_chain_length(t, cand_make), t))
    return found


def _chain_length(name: str, make: dict[str, onnx.NodeProto]) -> int:
    n = 0
    while name in make and make[name].op_type in PASS_THROUGH and n < 64:
        name, n = make[name].input[0], n + 1
    return n


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``names`` (typed from shape inference)."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    types = _elem_types(tapped)
    have = {o.name for o in tapped.graph.output}
    for name in names:
        if name not in have:
            tapped.graph.output.append(
                onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            )
            have.add(name)
    return tapped


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model  # untyped extra outputs default to FLOAT; the runtime reports a mismatch
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.output, *g.input]}


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes (other than Q/DQ) that read a DequantizeLinear output: what INT8 actually changed."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type not in PASS_THROUGH and any(i in dq for i in n.input) and n.name
    ]


def quantized_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Layer group -> every node of the group (quantized or not), for groups INT8 touched."""
    layout = read_layout(model)
    touched = {layout.group(n) for n in quantized_nodes(model)}
    found: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.name and n.op_type not in PASS_THROUGH and layout.group(n.name) in touched:
            found.setdefault(layout.group(n.name), []).append(n.name)
    return found  # in graph order: a group's first node comes before the next group's


def release(quantized: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """A copy of the Q/DQ graph in which ``nodes`` read unquantized inputs again: activations from the
    tensor their Q/DQ pair wrapped, weights from the FP32 graph. Scales of other layers stay as
    calibrated, so this is what quantizing with those nodes excluded gives, without re-calibrating."""
    out = onnx.ModelProto()
    out.CopyFrom(quantized)
    g = out.graph
    make = producers(out)
    fp32_nodes = {n.name: n for n in fp32.graph.node if n.name}
    fp32_inits = {t.name: t for t in fp32.graph.initializer}
    names = set(nodes)
    missing = names - {n.name for n in g.node}
    if missing:
        raise InputError(
            f"cannot keep {sorted(missing)[0]!r} in high precision: no such node in the INT8 graph"
        )
    have_inits = {t.name for t in g.initializer}
    for node in g.node:
        if node.name not in names:
            continue
        for i, tensor in enumerate(node.input):
            if tensor not in make or make[tensor].op_type != "DequantizeLinear":
                continue
            source = origin(tensor, make)
            if source in have_inits:  # a quantized weight: take the FP32 graph's own tensor
                ref = fp32_nodes.get(node.name)
                weight = fp32_inits.get(ref.input[i]) if ref is not None and i < len(ref.input) else None
                if weight is None:
                    raise InputError(f"node {node.name!r} has no FP32 weight to restore in the FP32 graph")
                restored = numpy_helper.from_array(numpy_helper.to_array(weight), f"{weight.name}.fp32")
                if restored.name not in have_inits:
                    g.initializer.append(restored)
                    have_inits.add(restored.name)
                node.input[i] = restored.name
            else:
                node.input[i] = source
    _drop_dead(out)
    return out


def _drop_dead(model: onnx.ModelProto) -> None:
    """Remove nodes and initializers nothing reads any more (orphaned Q/DQ pairs and INT8 weights)."""
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def corrupt_scale(model: onnx.ModelProto, node: str, factor: float) -> str:
    """Multiply the scale of the activation Q/DQ pair feeding ``node`` by ``factor`` (in place); returns
    the tensor whose scale changed. For tests and demonstrations of a broken calibration."""
    make = producers(model)
    target = next((n for n in model.graph.node if n.name == node), None)
    if target is None:
        raise InputError(f"no node {node!r} in the graph")
    inits = {t.name: t for t in model.graph.initializer}
    for tensor in target.input:
        dq = make.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear" or origin(tensor, make) in inits:
            continue
        q = make.get(dq.input[0])
        for scale_name in {dq.input[1], *(q.input[1:2] if q is not None else ())}:
            scale = inits[scale_name]
            scale.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale_name)
            )
        return origin(tensor, make)
    raise InputError(f"node {node!r} reads no quantized activation")
