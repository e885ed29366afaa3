"""A backbone's stage outputs -> one ONNX graph with a named N,C,H,W output per stage.

The graph is traced from :class:`msmlp.models.features.FeatureBackbone`. With a size profile its H and W
axes are dynamic: the trace runs at the profile's opt size inside
:func:`msmlp.models.layers.dynamic_sizes`, so the reshapes between token layouts are recorded as shape
arithmetic, and the shifts are Slices whose bounds count from the ends of an axis (constants, right at
every size). Traced with static sizes and merely declared dynamic, such a graph would run at other sizes
without an error and give wrong values; verification at every size of the profile
(:mod:`msmlp.pipeline.features`) is what shows it does not. The output layout (channels, stride, module
per output, and the size profile) is recorded in the graph's ``msmlp.features`` metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from msmlp.errors import ExportError, InputError
from msmlp.exporters.onnx import (
    BATCH_DIM,
    TRACE_BATCH,
    _first_line,
    check_batch,
    check_opset,
    clean_graph,
    recorded_scopes,
    run_exporter,
    save_onnx,
    set_metadata,
)
from msmlp.exporters.onnx_io import layout_metadata
from msmlp.features import HEIGHT_DIM, META_KEY, WIDTH_DIM, FeatureLayout, SizeProfile
from msmlp.models.config import DeployConfig
from msmlp.models.family import family_layout
from msmlp.models.features import FeatureBackbone
from msmlp.models.layers import dynamic_sizes
from msmlp.models.registry import get_family


def feature_layout(
    model: nn.Module,
    config: DeployConfig,
    out_indices: str | Sequence[int] | None,
    profile: SizeProfile | None,
) -> FeatureLayout:
    """The layout a feature export of ``model`` will have (checks the sizes against the stride first)."""
    backbone = FeatureBackbone(model, out_indices)
    if profile is not None and profile.stride != backbone.stride:
        raise InputError(f"size profile stride {profile.stride} is not the network's {backbone.stride}")
    size = None if profile is not None else config.image_size
    if size is not None and (size[0] % backbone.stride or size[1] % backbone.stride):
        raise InputError(
            f"input size {size[0]}x{size[1]} is not a multiple of the network's stride {backbone.stride}"
        )
    return FeatureLayout(backbone.outputs, backbone.stride, size, profile)


def export_features_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    config: DeployConfig,
    layout: FeatureLayout,
    opset: int = 17,
    batch: Sequence[int] = (1, 1, 8),
    model_name: str | None = None,
) -> Path:
    """Export the stage outputs ``layout`` names to ``path`` (written atomically); return the path."""
    check_opset(opset)
    batch = check_batch(batch)
    backbone = FeatureBackbone(model, [o.stage for o in layout.outputs]).eval()
    size = layout.opt_size
    example = torch.randn(
        (TRACE_BATCH, config.input_size[0], *size), generator=torch.Generator().manual_seed(0)
    )
    names = list(layout.names)
    if layout.dynamic:
        axes = {config.input_name: {0: BATCH_DIM, 2: HEIGHT_DIM, 3: WIDTH_DIM}}
        axes.update({n: {0: BATCH_DIM, 2: f"{n}_{HEIGHT_DIM}", 3: f"{n}_{WIDTH_DIM}"} for n in names})
    else:
        axes = {n: {0: BATCH_DIM} for n in (config.input_name, *names)}
    dynamic = dynamic_sizes() if layout.dynamic else nullcontext()
    with recorded_scopes(model) as scopes, dynamic:  # the family layout per node scope, as for classifiers
        raw = run_exporter(backbone, example, opset=opset, names=([config.input_name], names), axes=axes)
    graph = clean_graph(raw)
    _name_io_shapes(graph, config, layout)
    name = model_name or type(model).__name__
    set_metadata(
        graph,
        {
            "model": name,
            "batch": ",".join(map(str, batch)),
            "input_size": (config.input_size[0], *size),
            META_KEY: json.dumps(layout.to_dict(), separators=(",", ":")),
            "layout": layout_metadata(scopes, family_layout(model, get_family(config.family))),
        },
    )
    try:
        onnx.checker.check_model(graph)
    except onnx.checker.ValidationError as exc:
        raise ExportError(
            f"the exported feature graph for {name!r} is not valid ONNX: {_first_line(exc)}"
        ) from exc
    return save_onnx(graph, path)


def _name_io_shapes(graph: onnx.ModelProto, config: DeployConfig, layout: FeatureLayout) -> None:
    """Write the input's and every output's shape out: ``batch`` and, when dynamic, ``height``/``width``
    (``<output>_height``...) as named axes, channels and fixed sizes as numbers (onnxslim's shape
    inference leaves some of them as generated names)."""

    def write(value: onnx.ValueInfoProto, dims: Sequence[int | str]) -> None:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            entry = shape.dim.add()
            if isinstance(d, str):
                entry.dim_param = d
            else:
                entry.dim_value = d

    (feed,) = graph.graph.input
    write(feed, [BATCH_DIM, config.input_size[0], *layout.input_dims()])
    by_name = {o.name: o for o in layout.outputs}
    for value in graph.graph.output:
        out = by_name[value.name]
        write(value, [BATCH_DIM, out.channels, *layout.output_dims(out)])
