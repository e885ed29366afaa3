"""msmlp.onnxproto reads what the onnx package reads, from real exports and from hand-built graphs, and
refuses what is not an ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import msmlp
from msmlp.artifacts import read_artifact
from msmlp.errors import EngineError
from msmlp.exporters.onnx import export_onnx
from msmlp.onnxproto import read_onnx_header


def _with_onnx(path: Path) -> dict:
    """The same fields, read by the onnx package."""
    graph = onnx.load(str(path), load_external_data=False)

    def info(vi) -> tuple:
        t = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
        return vi.name, t.elem_type, dims

    return {
        "inputs": tuple(info(vi) for vi in graph.graph.input),
        "outputs": tuple(info(vi) for vi in graph.graph.output),
        "op_types": {n.op_type for n in graph.graph.node},
        "initializers": {t.name for t in graph.graph.initializer},
        "initializer_types": {t.data_type for t in graph.graph.initializer},
        "metadata": {p.key: p.value for p in graph.metadata_props},
    }


def _without_onnx(path: Path) -> dict:
    h = read_onnx_header(path)
    return {
        "inputs": tuple((v.name, v.elem_type, v.dims) for v in h.inputs),
        "outputs": tuple((v.name, v.elem_type, v.dims) for v in h.outputs),
        "op_types": set(h.op_types),
        "initializers": set(h.initializers),
        "initializer_types": set(h.initializer_types),
        "metadata": h.metadata,
    }


@pytest.mark.parametrize("name", msmlp.list_models(test=True))
def test_an_export_reads_the_same_as_with_onnx(name, contributing, tmp_path):
    path = export_onnx(contributing(name), tmp_path / "model.onnx", config=msmlp.get_config(name))
    read = _without_onnx(path)
    assert read == _with_onnx(path)
    assert read["inputs"][0][2][0] == -1 and len(read["op_types"]) > 5  # dynamic batch, a real graph
    assert read_artifact(path).precision == "fp32"


def _hand_built(path: Path) -> Path:
    """fp16 weights also listed as a graph input (older exporters), a Q/DQ pair, symbolic and fixed
    dims, metadata: the cases the runtime's reading depends on."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float16), "w")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    nodes = [
        helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["xh", "w"], ["y16"]),
        helper.make_node("Cast", ["y16"], ["y32"], to=TensorProto.FLOAT),
        helper.make_node("QuantizeLinear", ["y32", "scale"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hand",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT16, [4, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[w, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"msmlp.model": "hand", "msmlp.batch": "1,2,4"})
    onnx.save(model, str(path))
    return path


def test_hand_built_graph_reads_the_same_as_with_onnx(tmp_path):
    path = _hand_built(tmp_path / "hand.onnx")
    read = _without_onnx(path)
    assert read == _with_onnx(path)
    header = read_onnx_header(path)
    assert [v.name for v in header.feeds] == ["x"]  # the listed weight is not a feed
    info = read_artifact(path)
    assert info.precision == "int8" and info.model == "hand" and info.batch == (1, 2, 4)
    assert info.inputs[0].shape == (-1, 4) and info.inputs[0].dtype == "float32"


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an onnx graph", b"PK\x03\x04 not a graph", b"\x08\x07", b"\x08\x07\x3a\xff\x01"],
    ids=["empty", "text", "zip", "no-graph", "truncated-graph"],
)
def test_what_is_not_an_onnx_model_is_one_engine_error(tmp_path, data):
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(EngineError, match=r"is not a readable ONNX model .*re-export it with msmlp-export"):
        read_onnx_header(path)


def test_a_truncated_export_is_an_engine_error(tmp_path):
    path = _hand_built(tmp_path / "hand.onnx")
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(EngineError, match="truncated"):
        read_onnx_header(path)
