"""ONNX Runtime backend: several batch sizes in one session, names and ranges from graph and metadata,
clear errors for bad feeds, corrupt files and graphs of another model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import msmlp
from msmlp.artifacts import read_artifact
from msmlp.errors import EngineError, InputError
from msmlp.exporters.onnx import export_onnx
from msmlp.fileio import file_sha256
from msmlp.runtime import open_backend
from msmlp.runtime.ort import OnnxRuntimeBackend, resolve_providers
from msmlp.verify import compare


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, contributing) -> dict[str, tuple[Path, torch.nn.Module]]:
    folder = tmp_path_factory.mktemp("ort")
    out = {}
    for name in ("msmlp_micro", "s2mlpv2_micro"):
        model = contributing(name)
        out[name] = (export_onnx(model, folder / name / "model.onnx", config=msmlp.get_config(name)), model)
    return out


def batch_of(n: int, name: str = "msmlp_micro", seed: int = 0) -> np.ndarray:
    shape = (n, *msmlp.get_config(name).input_size)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def without_metadata(src: Path, dst: Path) -> Path:
    graph = onnx.load(src)
    del graph.metadata_props[:]
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, dst)
    return dst


def test_several_batch_sizes_in_one_session(graphs):
    path, model = graphs["s2mlpv2_micro"]
    with OnnxRuntimeBackend(path) as backend:
        session = backend.session
        for n in (1, 2, 5, 8, 3):
            x = batch_of(n, "s2mlpv2_micro", seed=n)
            out = backend(x)
            with torch.inference_mode():
                ref = model(torch.from_numpy(x)).numpy()
            assert out.shape == (n, 1000) and out.dtype == np.float32
            assert compare(ref, out).max_rel <= 1e-4
        assert backend.session is session
        assert len(backend.infer_times_s) == 5 and backend.last_infer_s > 0
    assert backend.session is None and not backend.loaded


def test_names_shapes_and_range_come_from_the_graph(graphs):
    backend = OnnxRuntimeBackend(graphs["msmlp_micro"][0]).load()
    assert (backend.input_name, backend.output_name) == ("input", "logits")
    assert backend.input_shape == (-1, 3, 64, 64)
    assert backend.batch_range == (1, 64)  # the profile recorded inside the graph
    assert backend.info.model == "msmlp_micro" and backend.precision == "fp32"
    with pytest.raises(AttributeError):
        backend.batch_range = (1, 2)  # read-only: nobody changes a backend's description from outside
    info = backend.describe()
    assert info["providers"] == ["CPUExecutionProvider"] and info["model"] == "msmlp_micro"
    backend.close()


def test_model_json_sets_the_batch_range_and_a_stale_one_is_ignored(graphs, tmp_path, caplog):
    path = without_metadata(graphs["msmlp_micro"][0], tmp_path / "model.onnx")
    meta = {
        "model": "msmlp_micro",
        "batch": [2, 4, 16],
        "artifacts": {"model.onnx": {"sha256": file_sha256(path)}},
    }
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with OnnxRuntimeBackend(path) as backend:
        assert backend.batch_range == (2, 16) and backend.info.model == "msmlp_micro"
        with pytest.raises(InputError, match=r"batch 1 is outside the supported range 2\.\.16"):
            backend(batch_of(1))
        assert backend(batch_of(2)).shape == (2, 1000)
    meta["artifacts"]["model.onnx"]["sha256"] = "0" * 64
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="msmlp"):
        assert read_artifact(path).source is None
    assert "stale metadata" in caplog.text
    with OnnxRuntimeBackend(path) as backend:
        assert backend.batch_range == (1, 1 << 30) and backend.info.model is None


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"images": batch_of(1)}, r"inputs \['images'\] do not match the model's input \['input'\]"),
        ({"input": batch_of(1)[:, :, :32]}, r"input shape \(1, 3, 32, 64\) does not match \(-1, 3, 64, 64\)"),
        ({"input": batch_of(1)[0]}, r"input shape \(3, 64, 64\) does not match"),
        ({"input": batch_of(65)}, r"batch 65 is outside the supported range 1\.\.64"),
    ],
)
def test_bad_feeds_are_input_errors(graphs, feed, message):
    with OnnxRuntimeBackend(graphs["msmlp_micro"][0]) as backend, pytest.raises(InputError, match=message):
        backend.infer(feed)


def test_corrupt_truncated_and_missing_files_are_engine_errors(graphs, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"definitely not an onnx graph")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(graphs["msmlp_micro"][0].read_bytes()[:5000])
    for path in (garbage, truncated):
        with pytest.raises(
            EngineError, match=r"is not a readable ONNX model .*re-export it with msmlp-export"
        ):
            OnnxRuntimeBackend(path).load()
    with pytest.raises(InputError, match="does not exist"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx").load()


def test_graph_of_another_model_is_refused_by_name_then_by_shape(graphs, tmp_path):
    s2_path = graphs["s2mlpv2_micro"][0]
    with OnnxRuntimeBackend(s2_path) as backend:
        with pytest.raises(InputError, match="exported from model 's2mlpv2_micro', not 'msmlp_micro'"):
            backend.check_model("msmlp_micro", msmlp.get_config("msmlp_micro"))
        backend.check_model("s2mlpv2_micro", msmlp.get_config("s2mlpv2_micro"))
    bare = without_metadata(s2_path, tmp_path / "bare.onnx")
    with OnnxRuntimeBackend(bare) as backend:
        assert backend.info.model is None
        with pytest.raises(
            InputError, match=r"takes input \(N, 3, 112, 112\) but model 'msmlp_micro' takes \(N, 3, 64, 64\)"
        ):
            backend.check_model("msmlp_micro", msmlp.get_config("msmlp_micro"))


def test_provider_names_threads_and_levels(graphs):
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers(["cpu"]) == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(
        InputError, match=r"execution provider\(s\) \['NoSuchExecutionProvider'\] are not available"
    ):
        resolve_providers(["NoSuchExecutionProvider"])
    with pytest.raises(InputError, match="threads must be a positive integer"):
        OnnxRuntimeBackend(graphs["msmlp_micro"][0], threads=0)
    with pytest.raises(InputError, match="optimization 'fast' is not one of"):
        OnnxRuntimeBackend(graphs["msmlp_micro"][0], optimization="fast")
    x = batch_of(2)
    outs = []
    for options in ({"optimization": "disable", "threads": 1}, {"optimization": "all", "spin": True}):
        with OnnxRuntimeBackend(graphs["msmlp_micro"][0], **options) as backend:
            outs.append(backend(x))
    assert compare(outs[0], outs[1]).max_rel <= 1e-5


def test_open_backend_honours_an_explicit_backend(graphs):
    backend = open_backend(onnx=graphs["msmlp_micro"][0], backend="onnxruntime", threads=1)
    assert isinstance(backend, OnnxRuntimeBackend) and not backend.loaded
    with pytest.raises(InputError, match="--backend 'onnx' is not one of"):
        open_backend(onnx=graphs["msmlp_micro"][0], backend="onnx")
    with pytest.raises(InputError, match="give exactly one of --model, --onnx or --engine"):
        open_backend(model="msmlp_micro", onnx=graphs["msmlp_micro"][0])


def test_nan_and_infinite_inputs_are_input_errors(graphs):
    x = batch_of(2)
    x[1, 0, 0, 0] = np.nan
    with (
        OnnxRuntimeBackend(graphs["msmlp_micro"][0]) as backend,
        pytest.raises(InputError, match="NaN or infinite"),
    ):
        backend(x)
    assert len(backend.infer_times_s) == 0


@pytest.mark.gpu
def test_cuda_provider_matches_cpu(graphs):
    x = batch_of(4)
    with OnnxRuntimeBackend(graphs["msmlp_micro"][0], providers=["cuda"]) as gpu:
        assert gpu.describe()["providers"][0] == "CUDAExecutionProvider"
        out = gpu(x)
    with OnnxRuntimeBackend(graphs["msmlp_micro"][0]) as cpu:
        assert compare(cpu(x), out).cosine >= 0.99999
