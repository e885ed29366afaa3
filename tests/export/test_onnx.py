"""ONNX export: dynamic batch, fixed spatial size, opset, names, metadata, atomic save, cleanup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import msmlp
from msmlp.errors import ExportError, InputError
from msmlp.export import onnx as onnx_export
from msmlp.export.check import op_counts
from msmlp.export.onnx import check_batch, clean_graph, export_onnx, sum_stacked_branches, trace_to_onnx
from msmlp.verify import compare

MICRO = ["msmlp_micro", "s2mlpv2_micro"]


def run_onnx(path_or_bytes: Path | bytes, x: np.ndarray) -> np.ndarray:
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, contributing) -> dict[str, tuple[Path, torch.nn.Module]]:
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in MICRO:
        model = contributing(name)
        out[name] = (export_onnx(model, folder / f"{name}.onnx", config=msmlp.get_config(name)), model)
    return out


@pytest.mark.parametrize("name", MICRO)
def test_graph_has_named_dynamic_batch_and_fixed_spatial_size(exported, name):
    path, _ = exported[name]
    graph = onnx.load(path)
    config = msmlp.get_config(name)
    assert [i.name for i in graph.graph.input] == [config.input_name]
    assert [o.name for o in graph.graph.output] == [config.output_name]
    assert dims(graph.graph.input[0]) == ["batch", *config.input_size]
    assert dims(graph.graph.output[0]) == ["batch", config.num_classes]
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["msmlp.model"] == name and meta["msmlp.batch"] == "1,8,64"


@pytest.mark.parametrize("name", MICRO)
def test_exported_graph_matches_pytorch_at_several_batch_sizes(exported, name):
    path, model = exported[name]
    config = msmlp.get_config(name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).standard_normal((batch, *config.input_size), dtype=np.float32)
        out = session.run(None, {"input": x})[0]
        stats = compare(torch_logits(model, x), out)
        assert out.shape == (batch, config.num_classes)
        assert stats.max_rel <= 1e-4 and stats.top1 == 1.0, stats


def test_layernorm_is_one_node_and_cleanup_leaves_no_shape_noise(exported):
    counts = op_counts(onnx.load(exported["s2mlpv2_micro"][0]))
    # 2 blocks x 2 stages x 2 norms + the final norm: each one LayerNormalization node
    assert counts["LayerNormalization"] == 9
    assert not {"Shape", "Gather", "Identity", "Constant", "ScatterND", "ReduceSum"} & set(counts)


def test_cleanup_keeps_outputs_and_drops_nodes(contributing):
    name = "s2mlpv2_micro"
    config = msmlp.get_config(name)
    raw = trace_to_onnx(contributing(name), config=config, opset=17)
    cleaned = clean_graph(onnx.ModelProto.FromString(raw.SerializeToString()))
    before, after = op_counts(raw), op_counts(cleaned)
    assert sum(after.values()) < sum(before.values()) / 2
    assert before["Shape"] > 0 and after["Shape"] == 0
    x = np.random.default_rng(0).standard_normal((4, *config.input_size), dtype=np.float32)
    np.testing.assert_allclose(
        run_onnx(cleaned.SerializeToString(), x), run_onnx(raw.SerializeToString(), x), atol=1e-5
    )


def test_opset_20_exports_and_runs(contributing, tmp_path):
    config = msmlp.get_config("msmlp_micro")
    path = export_onnx(contributing("msmlp_micro"), tmp_path / "m.onnx", config=config, opset=20)
    assert [o.version for o in onnx.load(path).opset_import if o.domain == ""] == [20]
    x = np.zeros((2, *config.input_size), np.float32)
    assert run_onnx(path, x).shape == (2, 1000)


@pytest.mark.parametrize("opset", [13, 21, "17"])
def test_unsupported_opset_is_refused(contributing, tmp_path, opset):
    with pytest.raises(InputError, match=r"opset .* is not supported; use 17\.\.20"):
        export_onnx(
            contributing("msmlp_micro"),
            tmp_path / "m.onnx",
            config=msmlp.get_config("msmlp_micro"),
            opset=opset,
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("batch", [(0, 1, 8), (8, 1, 64), (1, 8), (1, 2.0, 4)])
def test_bad_batch_profile_is_quoted(batch):
    with pytest.raises(InputError, match="MIN,OPT,MAX"):
        check_batch(batch)


def test_failed_export_leaves_nothing_behind(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("this model cannot be traced")

    target = tmp_path / "model.onnx"
    with pytest.raises(
        ExportError, match="torch.onnx.export failed: RuntimeError: this model cannot be traced"
    ):
        export_onnx(Broken(), target, config=msmlp.get_config("msmlp_micro"))
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_over_an_existing_file(exported, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous artefact")
    graph = onnx.load(exported["msmlp_micro"][0])

    def disk_full(self: Path, data: bytes) -> int:
        self.open("wb").write(data[:100])  # a partial write, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="disk full"):
        onnx_export.save_onnx(graph, target)
    assert target.read_bytes() == b"previous artefact"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_graph_over_the_protobuf_limit_gets_one_data_file(exported, tmp_path, monkeypatch):
    path, model = exported["msmlp_micro"]
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 1000)
    target = onnx_export.save_onnx(onnx.load(path), tmp_path / "big.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    assert compare(torch_logits(model, x), run_onnx(target, x)).max_rel <= 1e-4


def test_stacked_branch_sums_become_sum_nodes_with_equal_outputs(contributing):
    name = "s2mlpv2_micro"
    config = msmlp.get_config(name)
    cleaned = clean_graph(trace_to_onnx(contributing(name), config=config, opset=17))
    before = cleaned.SerializeToString()
    # 2 stages x 2 blocks x (plain sum + weighted sum) in the split attention
    assert sum_stacked_branches(cleaned) == 8
    counts, old_counts = op_counts(cleaned), op_counts(onnx.ModelProto.FromString(before))
    assert old_counts["ReduceSum"] == 8 and "ReduceSum" not in counts and counts["Sum"] == 8
    assert counts["Concat"] == old_counts["Concat"] - 4  # the stacks of the 4 blocks are gone
    onnx.checker.check_model(cleaned)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, *config.input_size), dtype=np.float32)
        np.testing.assert_allclose(
            run_onnx(cleaned.SerializeToString(), x), run_onnx(before, x), rtol=0, atol=1e-5
        )


def stack_and_reduce(weighted: bool, unsqueeze_axis: int = 1, keepdims: int = 0) -> onnx.ModelProto:
    """xs (N,4,5) x3 -> stack on axis 1 -> [* w (N,3,1,5)] -> ReduceSum over axis 1."""
    from onnx import TensorProto, helper, numpy_helper

    xs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, ["N", 4, 5]) for i in range(3)]
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, ["N", 3, 1, 5])
    axes = numpy_helper.from_array(np.array([unsqueeze_axis], np.int64), "u_axes")
    red = numpy_helper.from_array(np.array([1], np.int64), "r_axes")
    nodes = [helper.make_node("Unsqueeze", [f"x{i}", "u_axes"], [f"u{i}"]) for i in range(3)]
    nodes.append(helper.make_node("Concat", ["u0", "u1", "u2"], ["stack"], axis=unsqueeze_axis))
    if weighted:
        nodes.append(helper.make_node("Mul", ["stack", "w"], ["prod"]))
    nodes.append(
        helper.make_node("ReduceSum", ["prod" if weighted else "stack", "r_axes"], ["y"], keepdims=keepdims)
    )
    out_shape = ["N", 4, 5] if keepdims == 0 else ["N", 1, 4, 5]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "g", [*xs, w] if weighted else xs, [y], [axes, red])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def run_graph(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}})[
        0
    ]


def test_weighted_branch_sum_is_rewritten_exactly():
    rng = np.random.default_rng(0)
    feeds = {f"x{i}": rng.standard_normal((2, 4, 5), dtype=np.float32) for i in range(3)}
    feeds["w"] = rng.standard_normal((2, 3, 1, 5), dtype=np.float32)
    model = stack_and_reduce(weighted=True)
    assert sum_stacked_branches(model) == 1
    assert op_counts(model) == {"Split": 1, "Squeeze": 3, "Mul": 3, "Sum": 1}
    expected = sum(feeds[f"x{i}"] * feeds["w"][:, i] for i in range(3))
    np.testing.assert_allclose(run_graph(model, feeds), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", [{"unsqueeze_axis": 2}, {"keepdims": 1}])
def test_look_alike_reductions_are_left_alone(variant):
    """Stacked on another axis than the one reduced, or keeping the reduced axis: not the pattern."""
    model = stack_and_reduce(weighted=False, **variant)
    before = model.SerializeToString()
    assert sum_stacked_branches(model) == 0
    assert model.SerializeToString() == before
