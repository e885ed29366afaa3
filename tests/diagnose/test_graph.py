"""Watched tensors, matching them through Q/DQ and Cast chains, layer groups, and releasing a group."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from msmlp.diagnose.graph import (
    load_model,
    match_taps,
    origin,
    producers,
    quantized_groups,
    release,
    select_taps,
)
from msmlp.errors import InputError
from msmlp.exporters.onnx_io import read_layout


def test_taps_cover_linear_layers_norms_and_block_boundaries(micro):
    taps = select_taps(load_model(micro("s2mlpv2_micro")["fp32"]))
    names = [t.name for t in taps]
    assert names[-1] == "logits" and [t.depth for t in taps] == list(range(len(taps)))
    assert "/stages.0/blocks/blocks.0/mlp/fc1/Add_output_0" in names  # after the bias Add
    assert "/stages.0/blocks/blocks.0/mlp/fc1/MatMul_output_0" not in names
    assert "/stages.0/blocks/blocks.0/Add_1_output_0" in names  # the residual: a block boundary
    assert "/stages.0/blocks/blocks.0/norm1/LayerNormalization_output_0" in names
    assert {t.group for t in taps} >= {
        "stages.0.blocks.0/mix",
        "stages.1.blocks.1/mlp",
        "head",
        "patch_embed",
    }


def test_groups_are_the_families_declared_groups_on_module_paths(micro):
    """Groups come from each family's BlockSpec, recorded at export: module paths, not exporter scopes
    (S2-MLPv2's patch_embed.proj is exported as ``/proj``)."""
    s2 = read_layout(load_model(micro("s2mlpv2_micro")["fp32"]))
    assert s2.group("/stages.1/blocks/blocks.0/mix/attn/fc1/MatMul") == "stages.1.blocks.0/mix"
    assert s2.group("/stages.1/blocks/blocks.0/norm2/LayerNormalization") == "stages.1.blocks.0/mlp"
    assert s2.group("/stages.1/blocks/blocks.0/norm1/LayerNormalization") == "stages.1.blocks.0/mix"
    assert (
        s2.group("/proj/Conv") == "patch_embed"
        and s2.group("/stages.1/downsample/Conv") == "stages.1.downsample"
    )
    ms = read_layout(load_model(micro("msmlp_micro")["fp32"]))
    assert ms.group("/layers.2/blocks.0/dwconv_td.3/Conv") == "layers.2.blocks.0/mix"
    assert ms.group("/layers.2/blocks.0/pwconv1/Conv") == "layers.2.blocks.0/mlp"
    assert ms.group("/layers.2/blocks.0/Slice_3") == "layers.2.blocks.0/mix"  # the roll: the block's own node
    assert ms.group("/layers.0/downsample/proj/Conv") == "layers.0.downsample"
    assert ms.group("/head/Gemm") == "head" and ms.group("/Transpose") == "graph"
    assert ms.in_block("/layers.1/blocks.0/Add") and not ms.in_block("/patch_embed/norm/Add")


def test_an_msmlp_graph_without_a_recorded_layout_is_refused(micro):
    graph = load_model(micro("msmlp_micro")["fp32"])
    keep = [p for p in graph.metadata_props if p.key != "msmlp.layout"]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    with pytest.raises(InputError, match="records no family layout .*export it again"):
        quantized_groups(graph)


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
