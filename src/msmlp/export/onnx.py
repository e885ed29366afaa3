"""PyTorch model -> one clean ONNX file with a dynamic batch axis.

The TorchScript exporter (``dynamo=False``) is used because it is fast (seconds, not minutes) and
handles a dynamic batch on every model here; it leaves Shape/Gather/Unsqueeze chains for every size
the tracer saw, which :func:`clean_graph` folds away with onnxslim (constant folding, dead-node and
Identity removal). :func:`rewrite_graph` then applies small find-check-rewrite rules that make the
graph faster to run without changing what it computes. The spatial size stays fixed by the model's :class:`DeployConfig`; only axis 0,
named ``batch``, varies. Weights are stored inline, so ``model.onnx`` is the whole artefact, unless the
graph exceeds protobuf's 2 GB limit.
"""

from __future__ import annotations

import io
import math
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from msmlp.errors import ExportError, InputError
from msmlp.export.check import op_counts
from msmlp.fileio import atomic_path
from msmlp.log import logger
from msmlp.models.registry import DeployConfig

DEFAULT_OPSET = 17
MIN_OPSET = 17  # LayerNormalization is a single node from opset 17 on
MAX_OPSET = 20  # the highest opset the TorchScript exporter writes
BATCH_DIM = "batch"
TRACE_BATCH = 2  # not 1, so that no size-1 broadcast is baked into the trace
PROTOBUF_LIMIT = 2**31 - 1
SMALL_CONSTANT = 16  # elements: the axes and split sizes that rewrite rules read
META_PREFIX = "msmlp."


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    config: DeployConfig,
    opset: int = DEFAULT_OPSET,
    batch: Sequence[int] = (1, 8, 64),
    cleanup: bool = True,
    model_name: str | None = None,
) -> Path:
    """Export ``model`` to ``path`` (written atomically) and return the path.

    ``batch`` is the (min, opt, max) profile recorded in the graph's metadata; the graph itself
    accepts any batch size. ``cleanup=False`` keeps the raw exporter output (for comparisons).
    """
    check_opset(opset)
    batch = check_batch(batch)
    name = model_name or getattr(model, "model_name", None) or type(model).__name__
    graph = trace_to_onnx(model, config=config, opset=opset)
    if cleanup:
        graph = clean_graph(graph)
        rewrite_graph(graph)
    set_batch_axis(graph, BATCH_DIM)
    set_metadata(graph, {"model": name, "batch": ",".join(map(str, batch)), "input_size": config.input_size})
    try:
        onnx.checker.check_model(graph)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph for {name!r} is not valid ONNX: {_first_line(exc)}") from None
    return save_onnx(graph, path)


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(
            f"opset {opset!r} is not supported; use {MIN_OPSET}..{MAX_OPSET} (17 makes LayerNorm one "
            f"LayerNormalization node; {MAX_OPSET} is the newest the TorchScript exporter writes)"
        )
    return opset


def check_batch(batch: Sequence[int]) -> tuple[int, int, int]:
    """A (min, opt, max) batch profile with 1 <= min <= opt <= max, or a clear error quoting it."""
    values = tuple(batch)
    ok = len(values) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if not ok or not 1 <= values[0] <= values[1] <= values[2]:
        text = ",".join(map(str, values))
        raise InputError(
            f"batch profile {text!r} is invalid; expected MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX"
        )
    return values  # type: ignore[return-value]


def trace_to_onnx(model: nn.Module, *, config: DeployConfig, opset: int) -> onnx.ModelProto:
    """Run the TorchScript exporter in memory; its tracer warnings go to the debug log."""
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn((TRACE_BATCH, *config.input_size), generator=gen)
    buffer = io.BytesIO()
    axes = {config.input_name: {0: BATCH_DIM}, config.output_name: {0: BATCH_DIM}}
    with _quiet_exporter():
        try:
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[config.input_name],
                output_names=[config.output_name],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter raises many types; the user needs the first line
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {_first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def clean_graph(graph: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and shape arithmetic, drop Identity and dead nodes (onnxslim)."""
    import onnxslim

    before = sum(op_counts(graph).values())
    try:
        cleaned = onnxslim.slim(graph)
    except Exception as exc:  # onnxslim raises assorted errors on graphs it cannot handle
        raise ExportError(
            f"graph cleanup (onnxslim) failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if cleaned is None:
        raise ExportError("graph cleanup (onnxslim) returned no model")
    logger.debug("cleanup: %d -> %d nodes", before, sum(op_counts(cleaned).values()))
    return cleaned


def rewrite_graph(graph: onnx.ModelProto) -> dict[str, int]:
    """Apply every rewrite rule in :data:`REWRITES` (in place); returns how often each one fired."""
    fired = {rule.__name__: rule(graph) for rule in REWRITES}
    logger.debug("rewrites: %s", fired)
    return fired


def sum_stacked_branches(graph: onnx.ModelProto) -> int:
    """Rewrite ``ReduceSum(stack(x_1..x_k) [* w], axis)`` as ``Sum(x_1 [* w_1], ..., x_k [* w_k])``.

    S2-MLPv2's split attention stacks its three branches (``torch.stack(xs, 1)``: Unsqueeze x3 + Concat)
    and reduces over the stack, plain and weighted. That copies every branch into one tensor and then
    runs a strided reduction, which ONNX Runtime does slowly at small batch (12% of S2-MLPv2-Small's time
    at batch 1); ``Sum`` reads the branches where they are. Returns the number of ReduceSum nodes rewritten.
    """
    g = _GraphIndex(graph)
    rewritten = 0
    for node in list(graph.graph.node):
        if node.op_type != "ReduceSum" or _attr(node, "keepdims", 1) != 0:
            continue
        axes = g.constant(node.input[1]) if len(node.input) > 1 else None
        source = g.producer(node.input[0])
        if axes is None or axes.size != 1 or source is None:
            continue
        if source.op_type == "Concat":
            branches = g.stacked_branches(source, int(axes[0]))
            terms = branches
            new_nodes: list[onnx.NodeProto] = []
        elif source.op_type == "Mul":
            terms, new_nodes = g.weighted_terms(source, int(axes[0]), node.name or node.output[0])
        else:
            continue
        if not terms:
            continue
        g.replace(
            node,
            [*new_nodes, onnx.helper.make_node("Sum", terms, list(node.output), name=f"{node.name}_sum")],
        )
        rewritten += 1
    if rewritten:
        g.prune_and_sort()
    return rewritten


class _GraphIndex:
    """Producers, consumers, constants and ranks of one graph, for small find-check-rewrite rules."""

    def __init__(self, graph: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        self.graph = graph
        small = (t for t in graph.graph.initializer if math.prod(t.dims) <= SMALL_CONSTANT)
        self.constants = {t.name: numpy_helper.to_array(t) for t in small}
        for node in graph.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producers = {o: n for n in graph.graph.node for o in n.output}
        values = (*graph.graph.value_info, *graph.graph.input, *graph.graph.output)
        self.shapes = {
            v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in values
            if v.type.tensor_type.HasField("shape")
        }

    def producer(self, name: str) -> onnx.NodeProto | None:
        return self.producers.get(name)

    def constant(self, name: str):
        return self.constants.get(name)

    def stacked_branches(self, concat: onnx.NodeProto, axis: int) -> list[str]:
        """The x_i of ``Concat(Unsqueeze(x_i, axis), ..., axis)``, or [] if it is not that pattern."""
        rank = len(self.shapes.get(concat.output[0], []))
        if not rank or _attr(concat, "axis", None) is None or _attr(concat, "axis") % rank != axis % rank:
            return []
        branches = []
        for name in concat.input:
            unsqueeze = self.producer(name)
            axes = (
                self.constant(unsqueeze.input[1])
                if unsqueeze is not None and unsqueeze.op_type == "Unsqueeze"
                else None
            )
            if axes is None or axes.size != 1 or int(axes[0]) % rank != axis % rank:
                return []
            branches.append(unsqueeze.input[0])
        return branches

    def weighted_terms(
        self, mul: onnx.NodeProto, axis: int, tag: str
    ) -> tuple[list[str], list[onnx.NodeProto]]:
        """For ``Mul(stack(x_i), w)`` with w of the same rank and k entries on ``axis``: the names of
        ``x_i * squeeze(w_i)`` and the Split/Squeeze/Mul nodes that compute them."""
        for stacked, weights in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            concat = self.producer(stacked)
            branches = (
                self.stacked_branches(concat, axis)
                if concat is not None and concat.op_type == "Concat"
                else []
            )
            w_shape = self.shapes.get(weights)
            if not branches or w_shape is None or len(w_shape) != len(self.shapes[stacked]):
                continue
            if w_shape[axis] != len(branches):
                continue
            k = len(branches)
            sizes, axes = self.add_constant(f"{tag}_split", [1] * k), self.add_constant(f"{tag}_axis", [axis])
            parts = [f"{tag}_w{i}" for i in range(k)]
            nodes = [onnx.helper.make_node("Split", [weights, sizes], parts, axis=axis, name=f"{tag}_split")]
            terms = []
            for i, (x, part) in enumerate(zip(branches, parts)):
                nodes.append(
                    onnx.helper.make_node("Squeeze", [part, axes], [f"{part}_sq"], name=f"{tag}_squeeze{i}")
                )
                nodes.append(
                    onnx.helper.make_node("Mul", [x, f"{part}_sq"], [f"{tag}_term{i}"], name=f"{tag}_mul{i}")
                )
                terms.append(f"{tag}_term{i}")
            return terms, nodes
        return [], []

    def add_constant(self, name: str, values: list[int]) -> str:
        import numpy as np
        from onnx import numpy_helper

        if name not in self.constants:
            self.graph.graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
            self.constants[name] = np.asarray(values, np.int64)
        return name

    def replace(self, old: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
        nodes = self.graph.graph.node
        index = list(nodes).index(old)
        del nodes[index]
        for offset, node in enumerate(new):
            nodes.insert(index + offset, node)

    def prune_and_sort(self) -> None:
        """Drop what no output depends on (nodes, initializers, shape records), then sort topologically."""
        graph = self.graph.graph
        needed = {o.name for o in graph.output}
        live: list[onnx.NodeProto] = []
        for node in reversed(graph.node):
            if any(o in needed for o in node.output):
                live.append(node)
                needed.update(i for i in node.input if i)
        ordered = _toposort(live[::-1], {i.name for i in graph.input} | {t.name for t in graph.initializer})
        del graph.node[:]
        graph.node.extend(ordered)
        produced = {o for n in ordered for o in n.output}
        for field, keep in (("initializer", needed), ("value_info", produced)):
            entries = [e for e in getattr(graph, field) if e.name in keep]
            del getattr(graph, field)[:]
            getattr(graph, field).extend(entries)


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's algorithm over tensor names; keeps the given order among nodes that are ready together."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    waiting = [len({producer[t] for t in n.input if t in producer}) for n in nodes]
    users: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for j in {producer[t] for t in node.input if t in producer}:
            users.setdefault(j, []).append(i)
    ready = deque(i for i, count in enumerate(waiting) if count == 0)
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in users.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    missing = {t for n in nodes for t in n.input if t and t not in producer and t not in available}
    if len(order) != len(nodes) or missing:
        raise ExportError(
            f"graph rewrite left a cycle or missing inputs {sorted(missing)[:3]}; please report this bug"
        )
    return [nodes[i] for i in order]


REWRITES = (sum_stacked_branches,)


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def set_batch_axis(graph: onnx.ModelProto, name: str = BATCH_DIM) -> None:
    """Name axis 0 of every graph input and output ``name`` (symbolic), leaving other axes alone."""
    for value in (*graph.graph.input, *graph.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = name


def set_metadata(graph: onnx.ModelProto, values: dict[str, object]) -> None:
    """Record ``msmlp.*`` keys in the graph's metadata_props, so a bare .onnx file says what it is."""
    keep = [p for p in graph.metadata_props if not p.key.startswith(META_PREFIX)]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    for key, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        graph.metadata_props.add(key=META_PREFIX + key, value=text)
    from msmlp import __version__

    graph.producer_name, graph.producer_version = "msmlp", __version__


def save_onnx(graph: onnx.ModelProto, path: str | Path) -> Path:
    """Write atomically: a temporary file in the same folder, then ``os.replace``.

    Graphs over protobuf's 2 GB limit get their weights in ``<name>.data`` beside the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if graph.ByteSize() < PROTOBUF_LIMIT:
        with atomic_path(path) as tmp:
            tmp.write_bytes(graph.SerializeToString())
        return path
    data_name = path.name + ".data"
    with atomic_path(path.parent / data_name) as tmp_data, atomic_path(path) as tmp:
        onnx.save_model(graph, tmp, save_as_external_data=True, location=tmp_data.name)
        # the graph names the data file; point it at the final name before both are moved into place
        external = onnx.load(tmp, load_external_data=False)
        for tensor in external.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data_name
        tmp.write_bytes(external.SerializeToString())
    logger.info(
        "weights are %.1f GB, over the 2 GB protobuf limit: stored in %s", graph.ByteSize() / 1e9, data_name
    )
    return path


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns about deprecation and tracing on every call; keep one debug line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in sorted({str(w.message).splitlines()[0] for w in caught}):
        logger.debug("torch.onnx.export: %s", message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
