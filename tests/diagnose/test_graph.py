"""Watched tensors, matching them through Q/DQ and Cast chains, layer groups, and releasing a group."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from msmlp.diagnose.graph import (
    group_of,
    load_model,
    match_taps,
    origin,
    producers,
    quantized_groups,
    release,
    select_taps,
)


def test_taps_cover_linear_layers_norms_and_block_boundaries(micro):
    taps = select_taps(load_model(micro("s2mlpv2_micro")["fp32"]))
    names = [t.name for t in taps]
    assert names[-1] == "logits" and [t.depth for t in taps] == list(range(len(taps)))
    assert "/stages.0/blocks/blocks.0/mlp/fc1/Add_output_0" in names  # after the bias Add
    assert "/stages.0/blocks/blocks.0/mlp/fc1/MatMul_output_0" not in names
    assert "/stages.0/blocks/blocks.0/Add_1_output_0" in names  # the residual: a block boundary
    assert "/stages.0/blocks/blocks.0/norm1/LayerNormalization_output_0" in names
    assert {t.group for t in taps} >= {"stages.0.blocks.0/mix", "stages.1.blocks.1/mlp", "head", "proj"}


def test_groups_follow_the_module_path():
    assert group_of("/stages.1/blocks/blocks.0/mix/attn/fc1/MatMul") == "stages.1.blocks.0/mix"
    assert group_of("/stages.1/blocks/blocks.0/norm2/LayerNormalization") == "stages.1.blocks.0/mlp"
    assert group_of("/layers.2/blocks.4/dwconv_td.3/Conv") == "layers.2.blocks.4/mix"
    assert group_of("/layers.2/blocks.4/pwconv1/MatMul") == "layers.2.blocks.4/mlp"
    assert group_of("/layers.2/blocks.4/Slice_3") == "layers.2.blocks.4/mix"  # the roll
    assert group_of("/layers.0/downsample/proj/Conv") == "layers.0.downsample"
    assert group_of("/head/Gemm") == "head" and group_of("/Transpose") == "graph"


def test_every_tap_is_found_in_int8_and_fp16_graphs_and_chains_lead_back(micro):
    paths = micro("msmlp_micro")
    ref = load_model(paths["fp32"])
    taps = select_taps(ref)
    ref_tensors = set(producers(ref))
    for precision, wrapper in (("int8", "DequantizeLinear"), ("fp16", "Cast")):
        cand = load_model(paths[precision])
        assert match_taps(ref, taps, cand) == {t.name: t.name for t in taps}
        make = producers(cand)
        wrapped = [o for o, n in make.items() if n.op_type == wrapper]
        assert wrapped, f"the {precision} graph has no {wrapper} nodes"
        # every converter-made tensor leads back, through its Q/DQ/Cast chain, to a tensor of the FP32
        # graph or to the renamed output of one of its nodes (AutoCast: Gemm -> logits_pre_cast -> Cast)
        known = ref_tensors | {t.name for t in cand.graph.initializer} | {"input"}
        ref_nodes = {n.name for n in ref.graph.node}
        for o in wrapped:
            source = origin(o, make)
            assert source in known or make[source].name in ref_nodes, (o, source)


def _tiny(names: dict[str, str]) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["input", "w"], [names["mm_out"]], name=names["mm"]),
        *names.get("extra", []),
        helper.make_node("Relu", [names["relu_in"]], ["logits"], name="/head/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    return helper.make_model(graph)


def test_a_renamed_output_is_found_through_its_node_and_its_cast_chain():
    ref = _tiny({"mm": "/fc/MatMul", "mm_out": "y", "relu_in": "y"})
    taps = select_taps(ref)
    assert [t.name for t in taps] == ["y", "logits"]
    cast = helper.make_node("Cast", ["y16"], ["y32"], name="/fc/Cast", to=TensorProto.FLOAT)
    # the converter renamed the op's output: found as the same output of the same-named node
    renamed = _tiny({"mm": "/fc/MatMul", "mm_out": "y16", "relu_in": "y32", "extra": [cast]})
    assert match_taps(ref, taps, renamed) == {"y": "y16", "logits": "logits"}
    # node renamed as well, but the Cast chain leads back to "y"
    chain = helper.make_node("Cast", ["y"], ["y_cast"], name="c", to=TensorProto.FLOAT)
    other = _tiny({"mm": "mm_fp16", "mm_out": "y", "relu_in": "y_cast", "extra": [chain]})
    assert match_taps(ref, taps, other)["y"] == "y"


def test_release_puts_a_group_back_in_fp32_exactly(micro):
    paths = micro("s2mlpv2_micro")
    fp32, int8 = load_model(paths["fp32"]), load_model(paths["int8"])
    groups = quantized_groups(int8)
    assert "stages.1.blocks.0/mlp" in groups and "head" not in groups  # the head stays FP32 by default
    every = [n for nodes in groups.values() for n in nodes]
    full = release(int8, fp32, every)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in full.graph.node)
    onnx.checker.check_model(full)
    import onnxruntime as ort

    x = np.asarray(micro("s2mlpv2_micro")["held_out"][:4])
    run = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"input": x}
        )[0]
        for m in (fp32, full)
    ]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-5, atol=1e-5)  # nothing quantized is left
