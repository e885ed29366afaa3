"""The compatibility check: real exported graphs pass, each broken rule is reported by name."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import pytest
from onnx import TensorProto, helper

import msmlp
from msmlp.errors import ExportError
from msmlp.exporters.check import DENIED_OPS, TENSORRT_OPS, check_graph
from msmlp.exporters.onnx import export_onnx


def one_node_graph(
    op_type: str = "Relu",
    *,
    shape: Sequence[int | str] = ("batch", 3, 8, 8),
    out_shape: Sequence[int | str] | None = None,
    domain: str = "",
    elem: int = TensorProto.FLOAT,
    opset: int = 17,
) -> onnx.ModelProto:
    """x -> op -> y; the check reads op types, shapes and opsets, so the op need not be runnable."""
    x = helper.make_tensor_value_info("input", elem, list(shape))
    y = helper.make_tensor_value_info("logits", elem, list(out_shape or shape))
    node = helper.make_node(op_type, ["input"], ["logits"], domain=domain)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=imports)


@pytest.mark.parametrize("name", msmlp.list_models(test=True))
def test_exported_micro_graphs_pass(contributing, tmp_path, name):
    config = msmlp.get_config(name)
    path = export_onnx(contributing(name), tmp_path / "m.onnx", config=config)
    report = check_graph(path)
    assert report.ok and report.violations == []
    assert report.opset == 17
    assert report.inputs == {"input": ["batch", *config.input_size]}
    assert report.outputs == {"logits": ["batch", 1000]}
    assert set(report.op_counts) <= TENSORRT_OPS
    assert report.node_count == len(onnx.load(path).graph.node)
    assert report.op_counts["Slice"] > 0 and report.op_counts["Concat"] > 0  # the shifts, as Slice/Concat
    assert report.summary().startswith(f"{report.node_count} nodes (")


def test_reference_s2mlpv2_shift_exports_scatternd_and_is_refused(contributing, tmp_path):
    """Slice assignment (how public S2-MLP code writes the shift) becomes ScatterND in ONNX."""
    config = msmlp.get_config("s2mlpv2_micro")
    model = contributing("s2mlpv2_micro", shift_form="reference")
    path = export_onnx(
        model, tmp_path / "ref.onnx", config=config, cleanup=False
    )  # cleanup keeps them too, slowly
    report = check_graph(path, raise_on_failure=False)
    assert report.op_counts["ScatterND"] > 0
    assert [v.rule for v in report.violations] == ["no_denied_ops"]
    with pytest.raises(ExportError, match=r"no_denied_ops: \d+ ScatterND node\(s\): .*shift_form='sliced'"):
        check_graph(path)


@pytest.mark.parametrize("op_type", ["Roll", "ScatterND", "ScatterElements", "GatherND", "NonZero", "Loop"])
def test_denied_ops_are_refused_with_a_reason(op_type):
    report = check_graph(one_node_graph(op_type), raise_on_failure=False)
    assert [v.rule for v in report.violations] == ["no_denied_ops"]
    assert DENIED_OPS[op_type] in report.violations[0].message


def test_custom_domain_op_needs_a_plugin():
    graph = one_node_graph("SpatialShift", domain="msmlp.plugins")
    with pytest.raises(
        ExportError, match=r"ops_supported_by_tensorrt: op type\(s\) msmlp.plugins::SpatialShift"
    ):
        check_graph(graph)
    assert check_graph(graph, extra_ops=["msmlp.plugins::SpatialShift"]).ok


@pytest.mark.parametrize(
    "op_type", ["QuantizeLinear", "DequantizeLinear", "Cast", "LayerNormalization", "Gelu"]
)
def test_precision_graph_ops_are_allowed(op_type):
    assert check_graph(one_node_graph(op_type)).ok


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 8, 8), "fixed batch axis 1"),
        (("batch", 3, "height", "width"), "dynamic non-batch axes"),
        ((), "has no shape"),
    ],
)
def test_batch_axis_rule(shape, message):
    report = check_graph(one_node_graph(shape=shape), raise_on_failure=False)
    assert {v.rule for v in report.violations} == {"batch_axis_dynamic"}
    assert message in report.violations[0].message


def test_integer_io_and_old_opset_are_reported_together():
    graph = one_node_graph(elem=TensorProto.INT64, opset=8)
    with pytest.raises(ExportError) as info:
        check_graph(graph)
    text = str(info.value)
    assert "io_types_supported: 'input' has element type INT64" in text
    assert "opset_in_range: opset 8 is outside TensorRT's supported 9..25" in text


def test_report_serialises(tmp_path):
    report = check_graph(one_node_graph("ScatterND"), raise_on_failure=False)
    data = report.to_dict()
    assert data["ok"] is False and data["op_counts"] == {"ScatterND": 1} and data["nodes"] == 1
    assert data["violations"][0].startswith("no_denied_ops: 1 ScatterND")


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not protobuf \xff\xff")
    with pytest.raises(ExportError, match="cannot read .*bad.onnx.* as ONNX"):
        check_graph(bad)
    with pytest.raises(ExportError, match="no such file"):
        check_graph(tmp_path / "missing.onnx")
