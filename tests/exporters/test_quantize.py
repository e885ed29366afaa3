"""INT8 Q/DQ graphs from ModelOpt PTQ: explicit, symmetric, per-channel, verified on held-out photos; the
TensorRT placement and the CPU placement (Q/DQ only on MatMul/Gemm/Conv inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import msmlp
from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.errors import InputError
from msmlp.exporters.calibration import calibration_batch, split_calibration
from msmlp.exporters.onnx import export_onnx
from msmlp.exporters.quantize import CPU_OP_TYPES, high_precision_nodes, quantize_int8
from msmlp.runtime.ort import OnnxRuntimeBackend
from msmlp.verify import compare, tolerance_for

MICRO = ["msmlp_micro", "s2mlpv2_micro"]


@pytest.fixture(scope="module")
def setups(tmp_path_factory: pytest.TempPathFactory, image_paths: list[Path]) -> dict:
    """Per micro model: FP32 graph, PyTorch model, calibration batch from the first 3 photos."""
    from msmlp.models.weights import make_contributing

    out = tmp_path_factory.mktemp("fp32")
    calib_files, _ = split_calibration(image_paths)
    result = {}
    for name in MICRO:
        model = make_contributing(msmlp.create_model(name), seed=0).eval()
        src = export_onnx(model, out / f"{name}.onnx", config=model.deploy_config, model_name=name)
        calib = calibration_batch(model.deploy_config, calib_files, 32)
        result[name] = {"src": src, "model": model, "calib": calib}
    return result


def _dq_consumers(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Node name -> the inputs it takes from DequantizeLinear outputs."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name: [i for i in n.input if i in dq] for n in model.graph.node}


def _held_out_inputs(setup: dict, image_paths: list[Path], views: int = 32) -> np.ndarray:
    _, held_out = split_calibration(image_paths)
    config = setup["model"].deploy_config
    return preprocess(augmented([load_image(p) for p in held_out], views, seed=1), config)


def _held_out_parity(setup: dict, path: Path, image_paths: list[Path], views: int = 32):
    x = _held_out_inputs(setup, image_paths, views)
    with torch.inference_mode():
        ref = setup["model"](torch.from_numpy(x)).numpy()
    with OnnxRuntimeBackend(path) as backend:
        return compare(ref, backend(x))


def _fused_vs_op_by_op(path: Path, x: np.ndarray) -> float:
    """Worst-case cosine between ONNX Runtime's optimized run of a Q/DQ graph (Q/DQ fused into its INT8
    kernels) and the same graph run op by op (graph optimizations off: each QuantizeLinear /
    DequantizeLinear on its own, the rest in FP32), i.e. ORT's INT8 kernels against the graph's meaning."""
    import onnxruntime as ort

    def run(level: ort.GraphOptimizationLevel) -> np.ndarray:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    return compare(
        run(ort.GraphOptimizationLevel.ORT_DISABLE_ALL), run(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    ).cosine


@pytest.mark.parametrize(("name", "method"), [("msmlp_micro", "max"), ("s2mlpv2_micro", "entropy")])
def test_int8_graph_is_explicit_symmetric_per_channel_and_close_to_fp32(
    name: str,
    method: str,
    setups: dict,
    image_paths: list[Path],
    tmp_out: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    setup = setups[name]
    dst = tmp_out / "model.int8.onnx"
    before = setup["src"].read_bytes()
    info = quantize_int8(setup["src"], dst, setup["calib"], method=method)
    assert setup["src"].read_bytes() == before  # ModelOpt rewrites its input; ours is left alone
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in tmp_out.iterdir()) == ["model.int8.onnx"]  # ModelOpt's files stay out
    assert sorted(p.name for p in setup["src"].parent.iterdir()) == [f"{n}.onnx" for n in MICRO]

    graph = onnx.load(str(dst))
    onnx.checker.check_model(graph)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") == info["activation_qdq"] > 10
    inits = {t.name: t for t in graph.graph.initializer}
    weight_dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dq and len(weight_dq) == info["weights_quantized"] == info["weights_per_channel"]
    for dq in weight_dq:
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        assert weight.data_type == onnx.TensorProto.INT8
        assert list(scale.dims) == [weight.dims[axis]]  # one scale per output channel
    zero_points = [inits[n.input[2]] for n in graph.graph.node if n.op_type == "DequantizeLinear"]
    assert all(not np.any(onnx.numpy_helper.to_array(z)) for z in zero_points)  # symmetric
    assert info["symmetric"] and info["calibration_method"] == method and info["calibration_inputs"] == 32
    assert {p.key: p.value for p in graph.metadata_props}["msmlp.precision"] == "int8"

    # Execution apart from calibration (which runs the FP32 graph): ONNX Runtime up to 1.24.x computes
    # U8S8 GEMMs of >= 32 rows wrongly on CPUs with AMX (microsoft/onnxruntime#27671); under 1.24.4 this
    # test saw cosine 0.982 against PyTorch on such a machine, 0.9993 with 1.31.1. On a CPU without AMX
    # this cosine is 0.9996 under both (the rest is rounding at Q boundaries, carried through the layers).
    kernels = _fused_vs_op_by_op(dst, _held_out_inputs(setup, image_paths))
    assert kernels >= 0.998, f"ONNX Runtime's INT8 kernels disagree with the Q/DQ graph: cosine {kernels}"
    stats = _held_out_parity(setup, dst, image_paths)
    assert stats.cosine >= tolerance_for("int8").min_cosine, stats
    # Top-1 on these random-weight micro models hinges on near-tied logits (median top-2 margin ~0.1), so
    # a sound INT8 graph lands around 90-100% here; the 95% tolerance is asserted on full-size models.
    assert stats.top1 >= 0.85 and stats.top5 >= 0.85, stats
    assert stats.max_abs > 1e-3  # really quantized


def test_sensitive_nodes_stay_in_high_precision(setups: dict, tmp_out: Path) -> None:
    setup = setups["s2mlpv2_micro"]
    auto = high_precision_nodes(onnx.load(str(setup["src"]), load_external_data=False))
    assert "/head/Gemm" in auto["per_image_gemms"]
    assert any("attn/fc1" in n for n in auto["per_image_gemms"])
    assert any("/attn/" in n for n in auto["activation_products"])  # attention weights x branches
    assert auto["input_layers"] == ["/proj/Conv"]  # the patch embedding on the raw pixels
    info = quantize_int8(setup["src"], tmp_out / "q.onnx", setup["calib"])
    consumers = _dq_consumers(onnx.load(str(tmp_out / "q.onnx")))
    assert all(not consumers[n] for nodes in auto.values() for n in nodes)
    assert info["kept_high_precision"] == {reason: len(nodes) for reason, nodes in auto.items()}
    token_matmuls = [n for n, q in consumers.items() if q and "MatMul" in n]
    assert len(token_matmuls) >= 8  # the per-token projections and MLPs are quantized


def test_keep_fp32_by_op_type(setups: dict, tmp_out: Path) -> None:
    setup = setups["msmlp_micro"]
    base = quantize_int8(setup["src"], tmp_out / "base.onnx", setup["calib"])
    kept = quantize_int8(setup["src"], tmp_out / "noconv.onnx", setup["calib"], keep_fp32=["Conv"])
    assert base["quantized_op_types"].get("Conv", 0) > 0
    assert "Conv" not in kept["quantized_op_types"] and kept["keep_fp32_op_types"] == ["Conv"]
    graph = onnx.load(str(tmp_out / "noconv.onnx"))
    consumers = _dq_consumers(graph)
    assert all(not consumers[n.name] for n in graph.graph.node if n.op_type == "Conv")
    assert kept["dequantize_nodes"] < base["dequantize_nodes"]


def test_keep_fp32_by_node_name(setups: dict, tmp_out: Path) -> None:
    setup = setups["s2mlpv2_micro"]
    names = [r"/stages.0/blocks/blocks.0/mlp/fc1/MatMul", r"/stages.1/blocks/blocks.1/mix/proj_in/.*"]
    info = quantize_int8(setup["src"], tmp_out / "q.onnx", setup["calib"], keep_fp32=names)
    graph = onnx.load(str(tmp_out / "q.onnx"))
    consumers = _dq_consumers(graph)
    kept = info["keep_fp32_nodes"]
    assert kept[0] == names[0] and len(kept) >= 2 and all(k in consumers for k in kept)
    assert all(not consumers[k] for k in kept)
    assert consumers["/stages.0/blocks/blocks.1/mlp/fc1/MatMul"]  # its neighbour is still quantized


def test_bad_requests_are_clear_errors(setups: dict, tmp_out: Path) -> None:
    setup = setups["s2mlpv2_micro"]
    with pytest.raises(InputError, match="calibration method 'minmax' is not one of max, entropy"):
        quantize_int8(setup["src"], tmp_out / "q.onnx", setup["calib"], method="minmax")
    with pytest.raises(InputError, match=r"calibration data of shape \(4, 3, 64, 64\) does not fit"):
        quantize_int8(setup["src"], tmp_out / "q.onnx", np.zeros((4, 3, 64, 64), np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        quantize_int8(setup["src"], tmp_out / "q.onnx", np.full_like(setup["calib"][:2], np.nan))
    with pytest.raises(
        InputError,
        match="'Softmaxx' is neither an op type nor a node name in the graph; did you mean Softmax",
    ):
        quantize_int8(setup["src"], tmp_out / "q.onnx", setup["calib"], keep_fp32=["Softmaxx"])
    with pytest.raises(InputError, match="high precision 'bf16'"):
        quantize_int8(setup["src"], tmp_out / "q.onnx", setup["calib"], high_precision="bf16")
    with pytest.raises(InputError, match="INT8 target 'openvino' is not one of tensorrt, cpu"):
        quantize_int8(setup["src"], tmp_out / "q.onnx", setup["calib"], target="openvino")
    assert list(tmp_out.iterdir()) == []


def _dq_consumer_ops(model: onnx.ModelProto) -> dict[str, set[str]]:
    """Op type -> names of its nodes that take at least one input from a DequantizeLinear."""
    types = {n.name: n.op_type for n in model.graph.node}
    found: dict[str, set[str]] = {}
    for name, inputs in _dq_consumers(model).items():
        if inputs:
            found.setdefault(types[name], set()).add(name)
    return found


@pytest.mark.parametrize("name", MICRO)
def test_cpu_target_quantizes_only_gemm_and_conv_inputs(
    name: str, setups: dict, image_paths: list[Path], tmp_out: Path
) -> None:
    """Before (``tensorrt``: Q/DQ also on Adds, LayerNorms, Splits) and after (``cpu``): the same GEMMs
    and convolutions in INT8, and nothing else behind a DequantizeLinear, so a CPU runtime can fold
    bias and residual into the INT8 GEMM."""
    setup = setups[name]
    trt = quantize_int8(setup["src"], tmp_out / "trt.onnx", setup["calib"])
    cpu = quantize_int8(setup["src"], tmp_out / "cpu.onnx", setup["calib"], target="cpu")
    assert trt["target"] == "tensorrt" and cpu["target"] == "cpu"
    before = _dq_consumer_ops(onnx.load(str(tmp_out / "trt.onnx")))
    graph = onnx.load(str(tmp_out / "cpu.onnx"))
    after = _dq_consumer_ops(graph)
    assert set(after) <= set(CPU_OP_TYPES), after.keys()
    assert set(cpu["quantized_op_types"]) <= set(CPU_OP_TYPES)
    assert not {"Add", "LayerNormalization", "Concat", "Slice", "Split"} & set(after)
    assert "Add" in before, before.keys()  # the TensorRT placement quantizes residual Adds too
    assert cpu["activation_qdq"] < trt["activation_qdq"]
    for op in CPU_OP_TYPES:  # the compute itself is as quantized as before
        assert after.get(op, set()) >= before.get(op, set()), op

    inits = {t.name: t for t in graph.graph.initializer}
    producer = {o: n for n in graph.graph.node for o in n.output}
    for dq in (n for n in graph.graph.node if n.op_type == "DequantizeLinear"):
        if dq.input[0] in inits:  # a weight: INT8, one scale per output channel
            weight, scale = inits[dq.input[0]], inits[dq.input[1]]
            axis = next(a.i for a in dq.attribute if a.name == "axis")
            assert weight.data_type == onnx.TensorProto.INT8 and list(scale.dims) == [weight.dims[axis]]
        else:  # an activation: one per-tensor scale, straight from its QuantizeLinear
            assert producer[dq.input[0]].op_type == "QuantizeLinear" and not inits[dq.input[1]].dims
    assert cpu["weights_quantized"] == cpu["weights_per_channel"] > 0
    auto = high_precision_nodes(onnx.load(str(setup["src"]), load_external_data=False))
    quantized = set().union(*after.values())
    assert not quantized & {n for nodes in auto.values() for n in nodes}  # exclusions still hold


@pytest.mark.cpu_features
@pytest.mark.parametrize("name", MICRO)
def test_cpu_target_held_out_parity_on_onnxruntime_and_openvino(
    name: str, setups: dict, image_paths: list[Path], tmp_out: Path
) -> None:
    """Calibrated on three photos, checked against PyTorch FP32 on views of the two others, on both CPU
    runtimes the placement is for (OpenVINO with its f32 and bf16 hints for the unquantized rest)."""
    ov = pytest.importorskip("msmlp.runtime.openvino", reason="OpenVINO is not installed")
    setup = setups[name]
    dst = tmp_out / "model.int8.onnx"
    quantize_int8(setup["src"], dst, setup["calib"], target="cpu")
    x = _held_out_inputs(setup, image_paths)
    with torch.inference_mode():
        ref = setup["model"](torch.from_numpy(x)).numpy()
    kernels = _fused_vs_op_by_op(dst, x)
    assert kernels >= 0.998, f"ONNX Runtime's INT8 kernels disagree with the Q/DQ graph: cosine {kernels}"
    runs = {"onnxruntime": OnnxRuntimeBackend(dst)}
    hints = ["f32", "bf16"] if ov.bf16_support()[0] else ["f32"]
    runs.update(
        {f"openvino {h}": ov.OpenVINOBackend(dst, inference_precision=h, cache_dir=False) for h in hints}
    )
    min_cosine = tolerance_for("int8").min_cosine
    for label, backend in runs.items():
        with backend:
            stats = compare(ref, backend(x))
            assert backend.info.precision == "int8"
            if label != "onnxruntime":  # OpenVINO really runs INT8 kernels for the quantized layers
                assert backend.info.details["execution_precision"].get("int8", 0) > 0, backend.info.details
        assert stats.cosine >= min_cosine, (label, stats)
        assert stats.top1 >= 0.85 and stats.max_abs > 1e-3, (label, stats)  # see the first test on top-1


@pytest.mark.slow
def test_full_size_fp16_and_int8_against_pytorch(
    tmp_out: Path, image_paths: list[Path], contributing
) -> None:
    """s2mlpv2_small as msmlp-export makes it: FP16, and INT8 calibrated on 32 inputs from 3 photos,
    checked against PyTorch FP32 on views of the 2 held-out photos.

    FP16 must meet its whole tolerance. INT8 must meet its cosine tolerance, and every top-1 disagreement
    must be a near-tie: these random-weight models give half of the views a top-1/top-2 logit margin
    under 1% of the logit range, which INT8's ~1% logit error can swap (see the report); a swap where the
    reference is decisive would be a real defect.
    """
    from msmlp.exporters.precision import convert_fp16

    model = contributing("s2mlpv2_small")
    config = model.deploy_config
    src = export_onnx(model, tmp_out / "model.onnx", config=config, model_name="s2mlpv2_small")
    calib_files, held_out = split_calibration(image_paths)
    convert_fp16(src, tmp_out / "model.fp16.onnx")
    quantize_int8(src, tmp_out / "model.int8.onnx", calibration_batch(config, calib_files, 32))
    x = preprocess(augmented([load_image(p) for p in held_out], 16, seed=1), config)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    out = {}
    for precision in ("fp16", "int8"):
        with OnnxRuntimeBackend(tmp_out / f"model.{precision}.onnx") as backend:
            out[precision] = backend(x)
    fp16 = compare(ref, out["fp16"])
    assert tolerance_for("fp16").failures(fp16) == [], fp16
    int8 = compare(ref, out["int8"])
    assert int8.cosine >= tolerance_for("int8").min_cosine and int8.top5 >= 0.85, int8
    rows = np.arange(len(ref))
    want, got = ref.argmax(1), out["int8"].argmax(1)
    margin = (ref[rows, want] - ref[rows, got]) / np.ptp(ref, axis=1)
    assert np.all(margin[want != got] < 0.01), margin[want != got]
