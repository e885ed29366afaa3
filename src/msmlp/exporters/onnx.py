"""PyTorch model -> one clean ONNX file with a dynamic batch axis.

The TorchScript exporter (``dynamo=False``) is used because it is fast (seconds, not minutes) and
handles a dynamic batch on every model here; it leaves Shape/Gather/Unsqueeze chains for every size
the tracer saw, which :func:`clean_graph` folds away with onnxslim (constant folding, dead-node and
Identity removal). The models already trace to their deployment form (shifts and split attention from
Slice/Concat/Add/Mul; MS-MLP channels-first, without Transpose), so no graph rewrite is needed. With
``shift="plugin"`` each whole-tensor shift the family declares (``FamilySpec.plugin_shifts``) becomes
one TensorRT plugin node instead (see :mod:`msmlp.plugins.onnx_nodes`). The export also records the
family's layout (layer groups, FP32 norms) per node scope, for FP16 and diagnosis (:mod:`.onnx_io`).
The spatial size stays fixed by the model's :class:`DeployConfig`; only axis 0,
named ``batch``, varies. Weights are stored inline, so ``model.onnx`` is the whole artefact, unless the
graph exceeds protobuf's 2 GB limit.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from msmlp.errors import ExportError, InputError
from msmlp.exporters.check import op_counts
from msmlp.exporters.onnx_io import layout_metadata
from msmlp.features import BATCH_DIM
from msmlp.fileio import atomic_path
from msmlp.log import logger
from msmlp.models.family import family_layout
from msmlp.models.layers import edge_shift_sliced, roll_sliced, shift_override
from msmlp.models.registry import DeployConfig, get_family
from msmlp.plugins.onnx_nodes import EDGE_SHIFT, GROUP_ROLL, NAMESPACE, PATTERNS, pattern_id

DEFAULT_OPSET = 17
MIN_OPSET = 17  # LayerNormalization is a single node from opset 17 on
MAX_OPSET = 20  # the highest opset the TorchScript exporter writes
TRACE_BATCH = 2  # not 1, so that no size-1 broadcast is baked into the trace
PROTOBUF_LIMIT = 2**31 - 1
META_PREFIX = "msmlp."
SHIFT_EXPORTS = ("slice", "plugin")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    config: DeployConfig,
    opset: int = DEFAULT_OPSET,
    batch: Sequence[int] = (1, 8, 64),
    cleanup: bool = True,
    model_name: str | None = None,
    shift: str = "slice",
) -> Path:
    """Export ``model`` to ``path`` (written atomically) and return the path.

    ``batch`` is the (min, opt, max) profile recorded in the graph's metadata; the graph itself
    accepts any batch size. ``cleanup=False`` keeps the raw exporter output (for comparisons).
    ``shift="plugin"`` writes each shift as one TensorRT plugin node (the engine build must call
    :func:`msmlp.plugins.register_trt_plugins`); ONNX Runtime runs such a graph only after
    :func:`msmlp.plugins.lower_plugin_nodes`.
    """
    check_opset(opset)
    batch = check_batch(batch)
    check_shift_export(shift)
    name = model_name or getattr(model, "model_name", None) or type(model).__name__
    spec = get_family(config.family)
    with recorded_scopes(model) as scopes:
        graph = trace_to_onnx(model, config=config, opset=opset, shift=shift)
    layout = layout_metadata(scopes, family_layout(model, spec))
    if cleanup:
        graph = clean_graph(graph)
    set_batch_axis(graph, BATCH_DIM)
    meta = {
        "model": name,
        "batch": ",".join(map(str, batch)),
        "input_size": config.input_size,
        "layout": layout,
    }
    set_metadata(graph, {**meta, "shift": shift} if shift != "slice" else meta)
    try:
        onnx.checker.check_model(graph)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph for {name!r} is not valid ONNX: {_first_line(exc)}") from exc
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


def check_shift_export(shift: str) -> str:
    if shift not in SHIFT_EXPORTS:
        raise InputError(
            f"shift export {shift!r} is unknown; use 'slice' (Slice/Concat, runs anywhere) or 'plugin' "
            "(one TensorRT plugin node per shift)"
        )
    return shift


def trace_to_onnx(
    model: nn.Module, *, config: DeployConfig, opset: int, shift: str = "slice"
) -> onnx.ModelProto:
    """Run the TorchScript exporter in memory; its tracer warnings go to the debug log."""
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn((TRACE_BATCH, *config.input_size), generator=gen)
    axes = {config.input_name: {0: BATCH_DIM}, config.output_name: {0: BATCH_DIM}}
    plugin = check_shift_export(shift) == "plugin"
    forms = _plugin_forms(config) if plugin else {}
    with shift_override(**forms) if plugin else nullcontext():
        return run_exporter(
            model,
            example,
            opset=opset,
            names=([config.input_name], [config.output_name]),
            axes=axes,
            custom_opsets={NAMESPACE: 1} if plugin else None,
        )


def run_exporter(
    model: nn.Module,
    example: torch.Tensor,
    *,
    opset: int,
    names: tuple[list[str], list[str]],
    axes: dict[str, dict[int, str]],
    custom_opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """The TorchScript exporter in memory, its warnings to the debug log, any failure one ExportError line.
    ``names``: the input and the output names."""
    buffer = io.BytesIO()
    with _quiet_exporter():
        try:
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=names[0],
                output_names=names[1],
                dynamic_axes=axes,
                do_constant_folding=True,
                custom_opsets=custom_opsets,
            )
        except Exception as exc:  # the exporter raises many types; the user needs the first line
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    return onnx.load_from_string(buffer.getvalue())


class _GroupRollNode(torch.autograd.Function):
    """Export-time form of MS-MLP's grouped roll: computes it eagerly, traces to one plugin node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, chunks: Sequence[int], shifts: Sequence[int], dim: int) -> torch.Tensor:
        groups = torch.split(x, list(chunks), 1)
        return torch.cat([roll_sliced(g, s, dim) for g, s in zip(groups, shifts)], 1)

    @staticmethod
    def symbolic(g, x, chunks: Sequence[int], shifts: Sequence[int], dim: int):
        node = g.op(
            f"{NAMESPACE}::{GROUP_ROLL}",
            x,
            chunks_i=list(chunks),
            shifts_i=list(shifts),
            axis_i=dim,
            plugin_namespace_s=NAMESPACE,
            aot_i=1,
        )
        return node.setType(x.type())


class _EdgeShiftNode(torch.autograd.Function):
    """Export-time form of S2-MLPv2's edge-replicating shift: one plugin node per branch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, pattern: int) -> torch.Tensor:
        return edge_shift_sliced(x, PATTERNS[pattern])

    @staticmethod
    def symbolic(g, x, pattern: int):
        node = g.op(
            f"{NAMESPACE}::{EDGE_SHIFT}",
            x,
            pattern_i=pattern,
            plugin_namespace_s=NAMESPACE,
            aot_i=1,
        )
        return node.setType(x.type())


def _edge_shift_node(x: torch.Tensor, pattern: Sequence[tuple[int, int]]) -> torch.Tensor:
    return _EdgeShiftNode.apply(x, pattern_id(pattern))


# export-time form of each fused shift slot that has a plugin node (models.layers.FUSED_NAMES)
PLUGIN_FORMS: dict[str, Callable[..., torch.Tensor]] = {
    "group_roll": _GroupRollNode.apply,
    "edge_shift": _edge_shift_node,
}


def _plugin_forms(config: DeployConfig) -> dict[str, Callable[..., torch.Tensor]]:
    """The plugin forms of the shifts the model's family declares; none declared is an error, since
    the export would silently hold no plugin node."""
    spec = get_family(config.family)
    missing = [s for s in spec.plugin_shifts if s not in PLUGIN_FORMS]
    if not spec.plugin_shifts or missing:
        raise InputError(
            f"model family {spec.name!r} declares plugin shifts {list(spec.plugin_shifts)}; plugin nodes "
            f"exist for {sorted(PLUGIN_FORMS)}: export it with shift='slice'"
        )
    return {s: PLUGIN_FORMS[s] for s in spec.plugin_shifts}


@contextmanager
def recorded_scopes(model: nn.Module) -> Iterator[dict[str, str]]:
    """Within the block, record for each module call the node scope the TorchScript exporter gives it
    (its callers' unqualified names joined by ``/``) -> the module's path in ``model``.

    The exporter names each module by its qualified name from the first non-numeric atom on
    (``layers.0.blocks.1`` -> ``blocks.1``), so scopes lose the path; this keeps it. A scope two
    modules share is an error: their nodes could not be told apart.
    """
    paths = {id(m): n for n, m in model.named_modules()}
    scopes: dict[str, str] = {}
    stack: list[str] = []

    def enter(module: nn.Module, args: object) -> None:
        path = paths.get(id(module), "")
        stack.append(_unqualified(path) if module is not model and path else "")
        scope = "/" + "/".join(p for p in stack if p)
        if module is not model and scopes.setdefault(scope, path) != path:
            raise ExportError(
                f"modules {scopes[scope]!r} and {path!r} export under the same node scope {scope!r}; "
                "their layer groups cannot be told apart"
            )

    def leave(module: nn.Module, args: object, output: object) -> None:
        stack.pop()

    handles = [
        h
        for m in model.modules()
        for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave, always_call=True))
    ]
    try:
        yield scopes
    finally:
        for h in handles:
            h.remove()


def _unqualified(path: str) -> str:
    atoms = path.split(".")
    start = next((i for i in range(len(atoms) - 1, -1, -1) if not atoms[i].isnumeric()), 0)
    return ".".join(atoms[start:])


def clean_graph(graph: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and shape arithmetic, drop Identity and dead nodes (onnxslim)."""
    import onnxslim

    before = sum(op_counts(graph).values())
    try:
        cleaned = onnxslim.slim(graph)
    except Exception as exc:  # onnxslim raises assorted errors on graphs it cannot handle
        raise ExportError(
            f"graph cleanup (onnxslim) failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    if cleaned is None:
        raise ExportError("graph cleanup (onnxslim) returned no model")
    logger.debug("cleanup: %d -> %d nodes", before, sum(op_counts(cleaned).values()))
    return cleaned


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
