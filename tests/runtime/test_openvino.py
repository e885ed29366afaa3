"""The OpenVINO backend on real graphs and real photos: FP32 parity with ONNX Runtime, BF16 and the INT8
Q/DQ graph within their verification tolerances against PyTorch FP32, the batch profile, the compiled
model cache, per-layer counters, and one-line errors for a missing module, a CPU without BF16 and bad
options."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.data.transforms import augmented, builtin_images, load_image, preprocess
from msmlp.errors import EngineError, InputError, MissingDependencyError
from msmlp.exporters.onnx import export_onnx
from msmlp.runtime import open_backend
from msmlp.runtime.openvino import OpenVINOBackend, bf16_support
from msmlp.runtime.ort import OnnxRuntimeBackend
from msmlp.runtime.torch_backend import TorchBackend
from msmlp.verify import compare, verify

pytest.importorskip("openvino")
MODEL = "s2mlpv2_micro"
BF16, WHY_NOT = bf16_support()
needs_bf16 = pytest.mark.skipif(not BF16, reason=f"no native BF16 here: {WHY_NOT}")
# cpu_features: what these tests check depends on the CPU's BF16 (CI runs them again with it masked)


@pytest.fixture(scope="module")
def module(contributing):
    return contributing(MODEL)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, module) -> dict[str, Path]:
    """model.onnx (batch profile 1,4,8) and its INT8 Q/DQ graph calibrated on views of the photos."""
    pytest.importorskip("modelopt.onnx.quantization")
    from msmlp.exporters.quantize import quantize_int8

    folder = tmp_path_factory.mktemp("ov")
    config = msmlp.get_config(MODEL)
    fp32 = export_onnx(module, folder / "model.onnx", config=config, batch=(1, 4, 8), model_name=MODEL)
    calib = preprocess(augmented([load_image(p) for p in builtin_images()], 16, seed=1), config)
    quantize_int8(fp32, folder / "model.int8.onnx", calib)
    return {"fp32": fp32, "int8": folder / "model.int8.onnx"}


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return preprocess([load_image(p) for p in builtin_images()], msmlp.get_config(MODEL))


def test_fp32_matches_onnxruntime_on_photos(graphs, photos, tmp_path):
    with (
        OpenVINOBackend(graphs["fp32"], cache_dir=tmp_path) as ov,
        OnnxRuntimeBackend(graphs["fp32"]) as ort,
    ):
        stats = compare(ort(photos), ov(photos))
        info = ov.info
    assert stats.cosine > 0.99999 and stats.top1 == 1.0 and stats.max_rel < 1e-4
    assert info.precision == "fp32" and info.backend == "openvino" and info.model == MODEL
    assert info.input_shape == (-1, *msmlp.get_config(MODEL).input_size) and info.batch_range == (1, 8)
    # OpenVINO defaults to bf16 on a BF16 CPU: the backend must have asked for f32 explicitly
    assert info.details["inference_precision_hint"] == "f32"
    assert set(info.details["execution_precision"]) == {"fp32"}


@pytest.mark.cpu_features
@needs_bf16
def test_bf16_hint_passes_the_bf16_tolerance(graphs, module, tmp_path):
    candidate = OpenVINOBackend(graphs["fp32"], inference_precision="bf16", cache_dir=tmp_path)
    with TorchBackend(module) as reference, candidate:
        report = verify(reference, candidate, builtin_images(), "bf16", (1, 8), raise_on_failure=False)
        info = candidate.info
    assert report.passed, report.failures()
    assert report.summary()["cosine"] >= 0.9995
    assert info.precision == "bf16" and info.details["inference_precision_hint"] == "bf16"
    assert info.details["execution_precision"].get("bf16", 0) > 0


@pytest.mark.cpu_features
@pytest.mark.parametrize("hint", [None, "bf16"])
def test_int8_graph_runs_int8_kernels_within_tolerance(graphs, module, tmp_path, hint):
    if hint == "bf16" and not BF16:
        pytest.skip(f"no native BF16 here: {WHY_NOT}")
    candidate = OpenVINOBackend(graphs["int8"], inference_precision=hint, cache_dir=tmp_path)
    with TorchBackend(module) as reference, candidate:
        report = verify(reference, candidate, builtin_images(), "int8", (8,), raise_on_failure=False)
        info = candidate.info
    assert report.passed, report.failures()
    assert info.precision == "int8"
    assert info.details["execution_precision"].get("int8", 0) > 0, info.details["execution_precision"]


def test_batch_profile_bounds_the_batch_axis(graphs, photos, tmp_path):
    with OpenVINOBackend(graphs["fp32"], cache_dir=tmp_path) as ov:
        eight = np.concatenate([photos, photos[:3]])
        assert ov(eight).shape == (8, 1000) and ov(photos[:1]).shape == (1, 1000)
        with pytest.raises(InputError, match=r"batch 9 is outside the supported range 1..8"):
            ov(np.concatenate([eight, photos[:1]]))


def test_second_start_loads_from_the_cache(graphs, photos, tmp_path):
    cache = tmp_path / "cache"
    with OpenVINOBackend(graphs["fp32"], cache_dir=cache) as first:
        expected = first(photos)
    blobs = sorted(p.name for p in cache.iterdir())
    assert blobs, "compiling wrote nothing to the cache"
    with OpenVINOBackend(graphs["fp32"], cache_dir=cache) as second:
        np.testing.assert_array_equal(second(photos), expected)
    assert sorted(p.name for p in cache.iterdir()) == blobs  # a hit, not a second entry


def test_profile_layers_reports_kernels_and_precisions(graphs, photos, tmp_path):
    with OpenVINOBackend(graphs["int8"], cache_dir=tmp_path) as ov:
        profile = ov.perf_counters(photos[:2], runs=2)
    assert profile["source"] == "openvino" and profile["batch"] == 2 and profile["runs"] == 2
    ops = {r["op"] for r in profile["nodes"]}
    assert any(op.startswith("FullyConnected") for op in ops) and all(
        r["ms_per_run"] >= 0 for r in profile["nodes"]
    )
    int8 = [r for r in profile["nodes"] if r["op"].startswith("FullyConnected") and r["precision"] == "int8"]
    assert int8 and all(r["exec_type"].endswith("_i8") for r in int8)


def test_throughput_hint_serves_concurrent_callers(graphs, photos, tmp_path):
    with OpenVINOBackend(graphs["fp32"], performance_hint="throughput", cache_dir=tmp_path) as ov:
        expected = [ov(photos[i : i + 1]) for i in range(len(photos))]
        got: dict[int, np.ndarray] = {}

        def call(i: int) -> None:
            got[i] = ov(photos[i : i + 1])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(photos))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ov.info.details["infer_requests"] >= 1
    for i, want in enumerate(expected):
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)


@pytest.mark.cpu_features
def test_open_backend_dispatches_openvino(graphs):
    backend = open_backend(onnx=graphs["fp32"], backend="openvino", precision="bf16" if BF16 else None)
    assert isinstance(backend, OpenVINOBackend) and backend.hint == ("bf16" if BF16 else "f32")


@pytest.mark.cpu_features
def test_cpu_without_bf16_is_one_clear_line(graphs, monkeypatch, tmp_path):
    """A CPU without BF16, simulated on any CPU by masking its BF16 flags."""
    monkeypatch.setenv("MSMLP_CPU_MASK", "bf16")
    assert bf16_support()[0] is False
    with pytest.raises(
        EngineError, match=r"needs native BF16 but the CPU has neither AMX.*use --precision f32"
    ) as err:
        OpenVINOBackend(graphs["fp32"], inference_precision="bf16", cache_dir=tmp_path).load()
    assert "\n" not in str(err.value)
    if BF16:  # the lack is simulated here, and the reason says so
        assert "masked by MSMLP_CPU_MASK" in str(err.value)


def test_missing_openvino_names_the_install_command(graphs, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"install it with: pip install openvino"):
        OpenVINOBackend(graphs["fp32"]).load()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inference_precision": "fp16"}, r"inference precision 'fp16' is not one of f32, bf16"),
        ({"performance_hint": "fast"}, r"performance hint 'fast' is not one of latency, throughput"),
        ({"threads": 0}, r"threads must be a positive integer or None .*got 0"),
    ],
)
def test_bad_options_are_rejected_where_they_enter(graphs, kwargs, message):
    with pytest.raises(InputError, match=message):
        OpenVINOBackend(graphs["fp32"], **kwargs)


def test_a_corrupt_graph_is_an_engine_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises((InputError, EngineError), match="not a readable ONNX model"):
        OpenVINOBackend(bad).load()
