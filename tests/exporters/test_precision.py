"""FP16 graphs from ModelOpt AutoCast: verified against PyTorch FP32, FP32 kept where it must be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import msmlp
from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.errors import InputError
from msmlp.exporters.onnx import export_onnx
from msmlp.exporters.precision import convert_fp16, precision_summary, written_out_norm_nodes
from msmlp.runtime.ort import OnnxRuntimeBackend
from msmlp.verify import compare, tolerance_for

MICRO = msmlp.list_models(test=True)


@pytest.fixture(scope="module")
def fp32_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    from msmlp.models.weights import make_contributing

    out = tmp_path_factory.mktemp("fp32")
    graphs = {}
    for name in MICRO:
        model = make_contributing(msmlp.create_model(name), seed=0).eval()
        path = export_onnx(model, out / f"{name}.onnx", config=model.deploy_config, model_name=name)
        graphs[name] = (path, model)
    return graphs


def _views(image_paths: list[Path], config: msmlp.DeployConfig, count: int = 16) -> np.ndarray:
    return preprocess(augmented([load_image(p) for p in image_paths], count, seed=1), config)


def _output_types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    return {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}


@pytest.mark.parametrize("name", MICRO)
def test_fp16_graph_meets_the_fp16_tolerance(
    name: str, fp32_graphs: dict, image_paths: list[Path], tmp_out: Path, capsys: pytest.CaptureFixture
) -> None:
    src, model = fp32_graphs[name]
    dst = tmp_out / "model.fp16.onnx"
    before = src.read_bytes()
    info = convert_fp16(src, dst)
    assert src.read_bytes() == before
    assert capsys.readouterr().out == ""  # ModelOpt's console output stays off stdout
    assert sorted(p.name for p in tmp_out.iterdir()) == ["model.fp16.onnx"]  # nothing else left behind

    graph = onnx.load(str(dst))
    onnx.checker.check_model(graph)
    numel = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
    for t in graph.graph.initializer:
        if t.data_type in numel:
            numel[t.data_type] += int(np.prod(t.dims))
    assert numel[TensorProto.FLOAT16] > 20 * numel[TensorProto.FLOAT]  # the weights are FP16
    # LayerNorms stay FP32, as one node or written out op by op (MS-MLP's channels-first form), and
    # nothing else does: every convolution and GEMM runs in FP16
    norms = [n for n in graph.graph.node if n.op_type == "LayerNormalization"]
    written_out = len(written_out_norm_nodes(onnx.load(str(src))))
    assert info["written_out_norm_nodes_fp32"] == written_out  # reported as a count, not 9 names each
    assert info["nodes_fp32"] == len(norms) + written_out > 0
    assert set(info["fp32_op_types"]) <= {
        "LayerNormalization",
        "ReduceMean",
        "Sub",
        "Mul",
        "Add",
        "Sqrt",
        "Div",
    }
    assert info["nodes_fp16"] >= sum(1 for n in graph.graph.node if n.op_type in ("Conv", "MatMul", "Gemm"))
    assert {p.key: p.value for p in graph.metadata_props}["msmlp.model"] == name  # export metadata kept
    # graph inputs and outputs stay FP32, so the FP16 graph is a drop-in replacement
    assert graph.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert graph.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT

    x = _views(image_paths, model.deploy_config)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    with OnnxRuntimeBackend(dst) as backend:
        stats = compare(ref, backend(x))
    assert tolerance_for("fp16").failures(stats) == [], stats
    assert stats.max_abs > 0  # it really is a different, lower-precision graph


def test_keep_fp32_by_op_type_and_node_name(fp32_graphs: dict, tmp_out: Path) -> None:
    src, _ = fp32_graphs["s2mlpv2_micro"]
    graph = onnx.load(str(src), load_external_data=False)
    head = next(n.name for n in graph.graph.node if n.op_type == "Gemm")
    info = convert_fp16(src, tmp_out / "kept.onnx", keep_fp32=["Softmax", head])
    assert info["keep_fp32_op_types"] == ["LayerNormalization", "Softmax"]
    assert info["keep_fp32_nodes"] == [head]
    converted = onnx.load(str(tmp_out / "kept.onnx"))
    types = _output_types(converted)
    by_name = {n.name: n for n in converted.graph.node}
    assert types[by_name[head].output[0]] == TensorProto.FLOAT
    softmax = [n for n in converted.graph.node if n.op_type == "Softmax"]
    assert softmax and all(types[n.output[0]] == TensorProto.FLOAT for n in softmax)
    assert info["fp32_op_types"]["Softmax"] == len(softmax)


def test_io_types_can_be_fp16(fp32_graphs: dict, tmp_out: Path) -> None:
    src, _ = fp32_graphs["msmlp_micro"]
    convert_fp16(src, tmp_out / "io16.onnx", keep_io_types=False)
    graph = onnx.load(str(tmp_out / "io16.onnx"))
    assert graph.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert graph.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_values_beyond_fp16_range_stay_fp32(tmp_out: Path) -> None:
    """A node whose real activations exceed the range check stays FP32; its small neighbour converts."""
    big = helper.make_tensor("big", TensorProto.FLOAT, [1], [3000.0])
    small = helper.make_tensor("small", TensorProto.FLOAT, [1], [0.5])
    nodes = [
        helper.make_node("Mul", ["input", "small"], ["scaled"], name="scale_small"),
        helper.make_node("Mul", ["scaled", "big"], ["huge"], name="scale_big"),
        helper.make_node("ReduceMean", ["huge"], ["logits"], name="pool", axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "overflow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [big, small],
    )
    src = tmp_out / "overflow.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    reference = np.random.default_rng(0).uniform(-2, 2, (4, 3, 16, 16)).astype(np.float32)
    convert_fp16(src, tmp_out / "overflow16.onnx", reference=reference)
    converted = onnx.load(str(tmp_out / "overflow16.onnx"))
    types = _output_types(converted)
    assert types["scaled"] == TensorProto.FLOAT16
    assert types["huge"] == TensorProto.FLOAT  # |values| up to 3000 > 512: kept FP32
    assert precision_summary(converted)["nodes_fp32"] >= 1


def test_bad_requests_are_clear_errors(fp32_graphs: dict, tmp_out: Path) -> None:
    src, _ = fp32_graphs["s2mlpv2_micro"]
    with pytest.raises(InputError, match="'stages.9/nothing' is neither an op type nor a node name"):
        convert_fp16(src, tmp_out / "x.onnx", keep_fp32=["stages.9/nothing"])
    with pytest.raises(InputError, match="does not exist"):
        convert_fp16(tmp_out / "missing.onnx", tmp_out / "x.onnx")
    (tmp_out / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(InputError, match="not a readable ONNX file"):
        convert_fp16(tmp_out / "junk.onnx", tmp_out / "x.onnx")
    with pytest.raises(InputError, match="do not fit the graph input"):
        convert_fp16(src, tmp_out / "x.onnx", reference=np.zeros((2, 3, 8, 8), np.float32))
    assert not (tmp_out / "x.onnx").exists()
