"""ONNX I/O shared by the precision steps and diagnosis: reading a graph, finding nodes by name,
carrying msmlp's metadata through converters, checking and saving atomically, and the family layout an
export records in the graph.

The layout (``msmlp.layout`` metadata) maps each node scope the exporter wrote (``/stages.0/blocks/
blocks.1/mlp/fc1``) to the layer group the model's family declares for that module and says which
scopes FP16 keeps in FP32. It is resolved once, at export, where the module tree is known; the
exporter's scope names alone lose it (``patch_embed.proj`` is written ``/proj``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from msmlp.errors import ExportError, InputError
from msmlp.fileio import atomic_path
from msmlp.log import logger
from msmlp.models.family import GRAPH_GROUP, FamilyLayout

LAYOUT_KEY = "msmlp.layout"
MODEL_KEY = "msmlp.model"
_PROTOBUF_LIMIT = 2**31 - 1


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


def save_converted(
    source: onnx.ModelProto, model: onnx.ModelProto, dst: Path, *, precision: str, src: Path
) -> None:
    """A converter's result onto disk the one way every precision step writes it: the exporter's metadata
    carried over from ``source`` (the graph read from ``src``), checked, then written atomically."""
    carry_metadata(source, model, precision=precision)
    check_valid(model, f"{precision.upper()} graph from {src}")
    save_model_atomic(model, dst)


# -- the family layout recorded at export ---------------------------------------------------------------


def node_scope(node_name: str) -> str:
    """The module scope of an exported node: ``/stages.0/blocks/blocks.1/mlp/fc1/MatMul`` ->
    ``/stages.0/blocks/blocks.1/mlp/fc1``; ``""`` for top-level nodes."""
    return node_name.rsplit("/", 1)[0] if node_name.startswith("/") else ""


@dataclass(frozen=True)
class GraphLayout:
    """Node name -> layer group and FP32 need, as the model's family declared them at export."""

    family: str
    groups: Mapping[str, str]  # node scope -> layer group
    blocks: frozenset[str]  # module paths of the residual blocks
    fp32_scopes: frozenset[str]

    def _scopes(self, node_name: str) -> Iterable[str]:
        scope = node_scope(node_name)
        while scope:
            yield scope
            scope = scope.rsplit("/", 1)[0]

    def group(self, node_name: str) -> str:
        """``<block>/<group>`` inside a residual block, else the enclosing module (``patch_embed``,
        ``stages.1.downsample``, ``head``), ``graph`` for top-level glue and unknown names."""
        return next((self.groups[s] for s in self._scopes(node_name) if s in self.groups), GRAPH_GROUP)

    def in_block(self, node_name: str) -> bool:
        return self.group(node_name).split("/", 1)[0] in self.blocks

    def keeps_fp32(self, node_name: str) -> bool:
        return any(s in self.fp32_scopes for s in self._scopes(node_name))


EMPTY_LAYOUT = GraphLayout("", {}, frozenset(), frozenset())


def layout_metadata(scopes: Mapping[str, str], layout: FamilyLayout) -> str:
    """The ``msmlp.layout`` value for an export: ``scopes`` maps node scope -> module path."""
    data = {
        "family": layout.family,
        "groups": {scope: layout.group(path) for scope, path in sorted(scopes.items())},
        "blocks": list(layout.blocks),
        "fp32": sorted(scope for scope, path in scopes.items() if layout.keeps_fp32(path)),
    }
    return json.dumps(data, separators=(",", ":"))


def read_layout(model: onnx.ModelProto) -> GraphLayout:
    """The family layout an msmlp export recorded; :data:`EMPTY_LAYOUT` for a graph msmlp did not export.

    An msmlp graph without one (exported by an older version) is an error, not an ungrouped graph.
    """
    meta = {p.key: p.value for p in model.metadata_props}
    if LAYOUT_KEY not in meta:
        if MODEL_KEY in meta:
            raise InputError(
                f"the graph of {meta[MODEL_KEY]!r} records no family layout ({LAYOUT_KEY}); it was exported "
                "by an older msmlp: export it again (msmlp-export)"
            )
        logger.debug("graph has no msmlp metadata: no family layout, every node in group %r", GRAPH_GROUP)
        return EMPTY_LAYOUT
    try:
        data = json.loads(meta[LAYOUT_KEY])
        return GraphLayout(
            str(data["family"]), dict(data["groups"]), frozenset(data["blocks"]), frozenset(data["fp32"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"the graph's {LAYOUT_KEY} metadata is unreadable ({exc}); export it again") from exc
