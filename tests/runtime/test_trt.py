"""The TensorRT backend: refusal of unusable plans (runs everywhere) and inference (TensorRT + GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.errors import EngineError, InputError, MissingDependencyError
from msmlp.export.engine import write_plan_metadata
from msmlp.runtime import open_backend
from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.runtime.trt import TensorRTBackend
from msmlp.verify import compare, tolerance_for

NAME = "s2mlpv2_micro"


def _fake_plan(folder: Path) -> Path:
    plan = folder / "model.plan"
    plan.write_bytes(b"\x00" * 256)
    write_plan_metadata(plan, {"model": NAME, "precision": "fp32", "tensorrt_version": "11.4.0.106",
                               "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}})  # fmt: skip
    return plan


def test_plan_without_metadata_is_refused_before_tensorrt(tmp_out: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = _fake_plan(tmp_out)
    (tmp_out / "model.plan.json").unlink()
    with pytest.raises(EngineError, match="no metadata file"):
        TensorRTBackend(plan).load()


def test_modified_or_foreign_plan_is_refused_before_tensorrt(tmp_out: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = _fake_plan(tmp_out)
    with pytest.raises(EngineError, match="built for model 's2mlpv2_micro', expected 'msmlp_tiny'"):
        TensorRTBackend(plan, expected_model="msmlp_tiny").load()
    plan.write_bytes(b"\x01" * 256)
    with pytest.raises(EngineError, match="modified or is corrupt"):
        TensorRTBackend(plan).load()


def test_intact_plan_without_tensorrt_names_the_install(tmp_out: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    backend = open_backend(engine=_fake_plan(tmp_out))
    assert isinstance(backend, TensorRTBackend) and not backend.loaded
    with pytest.raises(MissingDependencyError, match="pip install 'msmlp\\[tensorrt\\]'"):
        backend.load()
    assert not backend.loaded


# -- on a GPU with TensorRT -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """FP32, FP16 and INT8 plans of the micro model (profile 1..8), and the PyTorch reference."""
    from msmlp.export.calibration import calibration_batch, split_calibration
    from msmlp.export.engine import build_engine
    from msmlp.export.onnx import export_onnx
    from msmlp.export.precision import convert_fp16
    from msmlp.export.quantize import quantize_int8
    from msmlp.models.weights import make_contributing
    from msmlp.data.transforms import builtin_images

    out = tmp_path_factory.mktemp("trt")
    model = make_contributing(msmlp.create_model(NAME), seed=0).eval()
    config = model.deploy_config
    graphs = {"fp32": export_onnx(model, out / "model.onnx", config=config, batch=(1, 4, 8), model_name=NAME)}
    convert_fp16(graphs["fp32"], out / "model.fp16.onnx")
    graphs["fp16"] = out / "model.fp16.onnx"
    calib = calibration_batch(config, split_calibration(builtin_images())[0], 16)
    quantize_int8(graphs["fp32"], out / "model.int8.onnx", calib)
    graphs["int8"] = out / "model.int8.onnx"
    plans = {}
    for precision, graph in graphs.items():
        plans[precision] = out / f"{precision}.plan"
        build_engine(graph, plans[precision], batch=(1, 4, 8), input_name="input", input_shape=(3, 112, 112),
                     workspace_gib=1.0, metadata={"model": NAME, "precision": precision})  # fmt: skip
    return {"model": model, "config": config, "graphs": graphs, "plans": plans}


def _inputs(image_paths: list[Path], config, count: int) -> np.ndarray:
    return preprocess(augmented([load_image(p) for p in image_paths], count, seed=2), config)


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnx_runtime_at_several_batch_sizes(
    engines: dict, image_paths, precision: str
) -> None:
    from msmlp.runtime.ort import OnnxRuntimeBackend

    x = _inputs(image_paths, engines["config"], 8)
    with (
        TensorRTBackend(engines["plans"][precision], expected_model=NAME) as trt_backend,
        OnnxRuntimeBackend(engines["graphs"][precision]) as ort_backend,
    ):
        assert trt_backend.batch_range == (1, 8) and trt_backend.input_shape == (-1, 3, 112, 112)
        assert trt_backend.precision == precision
        for batch in (1, 3, 8):
            got, want = trt_backend(x[:batch]), ort_backend(x[:batch])
            assert got.shape == want.shape == (batch, 1000)
            stats = compare(want, got)
            assert stats.cosine >= (0.9999 if precision == "fp32" else 0.999), (batch, stats)
        assert len(trt_backend.infer_times_s) == 3


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_meets_the_pytorch_tolerance(engines: dict, image_paths, precision: str) -> None:
    import torch

    x = _inputs(image_paths[3:], engines["config"], 8)  # held-out photos (not calibration ones)
    with torch.inference_mode():
        ref = engines["model"](torch.from_numpy(x)).numpy()
    with TensorRTBackend(engines["plans"][precision]) as backend:
        stats = compare(ref, backend(x))
    assert stats.cosine >= tolerance_for(precision).min_cosine, stats


@pytest.mark.tensorrt
def test_batch_outside_the_profile_is_an_input_error(engines: dict, image_paths) -> None:
    x = _inputs(image_paths, engines["config"], 9)
    with TensorRTBackend(engines["plans"]["fp32"]) as backend:
        with pytest.raises(InputError, match="batch 9 is outside the supported range 1..8"):
            backend(x)
        with pytest.raises(InputError, match="does not match"):
            backend(x[:2, :, :64])
        assert backend(x[:8]).shape == (8, 1000)  # still usable afterwards


@pytest.mark.tensorrt
def test_cuda_graphs_give_the_same_logits(engines: dict, image_paths) -> None:
    x = _inputs(image_paths, engines["config"], 8)
    with (
        TensorRTBackend(engines["plans"]["fp16"]) as plain,
        TensorRTBackend(engines["plans"]["fp16"], cuda_graphs=True) as graphed,
    ):
        for batch in (4, 2, 4):  # capture two sizes, then replay the first
            np.testing.assert_allclose(graphed(x[:batch]), plain(x[:batch]), rtol=0, atol=1e-5)
        assert sorted(graphed._graphs) == [2, 4]


@pytest.mark.tensorrt
def test_infer_torch_runs_on_cuda_tensors(engines: dict, image_paths) -> None:
    import torch

    x = _inputs(image_paths, engines["config"], 4)
    with TensorRTBackend(engines["plans"]["fp32"]) as backend:
        expected = backend(x)
        out = backend.infer_torch(torch.from_numpy(x).cuda())
        torch.cuda.current_stream().synchronize()
        assert out.is_cuda and tuple(out.shape) == (4, 1000)
        np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=0, atol=1e-4)
        with pytest.raises(InputError, match="needs a torch tensor on cuda:0"):
            backend.infer_torch(torch.from_numpy(x))
        with pytest.raises(InputError, match="outside the engine's profile"):
            backend.infer_torch(torch.zeros((9, 3, 112, 112), device="cuda"))


@pytest.mark.tensorrt
def test_wrong_model_is_refused_before_deserializing(engines: dict) -> None:
    with pytest.raises(EngineError, match="built for model 's2mlpv2_micro', expected 'msmlp_micro'"):
        TensorRTBackend(engines["plans"]["fp32"], expected_model="msmlp_micro").load()
