"""``--backend auto`` for an ONNX graph: the verifications recorded in model.json (written with msmlp's
one writer, as the export pipeline writes them) decide the backend and precision; unverified graphs keep
their own precision; an explicit backend always wins; the choice is one INFO line."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

import msmlp
from msmlp.errors import InputError
from msmlp.exporters.onnx import export_onnx
from msmlp.manifest import Manifest
from msmlp.runtime import open_backend, registry
from msmlp.runtime import select as sel
from msmlp.runtime.openvino import OpenVINOBackend, bf16_support
from msmlp.runtime.ort import OnnxRuntimeBackend

pytest.importorskip("openvino")
MODEL = "msmlp_micro"
BF16, WHY_NOT = bf16_support()
needs_bf16 = pytest.mark.skipif(not BF16, reason=f"no native BF16 here: {WHY_NOT}")
# cpu_features: what these tests check depends on the CPU's BF16 (CI runs them again with it masked)
PASSED = {"passed": True, "cosine": 0.99999, "top1": 1.0}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, contributing) -> Path:
    folder = tmp_path_factory.mktemp("sel")
    export_onnx(contributing(MODEL), folder / "model.onnx", config=msmlp.get_config(MODEL), batch=(1, 4, 8))
    return folder / "model.onnx"


def folder_with(tmp_path: Path, exported: Path, verification: dict[str, dict]) -> Path:
    """A copy of the graph with a model.json recording ``verification`` (key -> summary)."""
    graph = tmp_path / "model.onnx"
    shutil.copy(exported, graph)
    manifest = Manifest.open(
        tmp_path,
        model=MODEL,
        config=msmlp.get_config(MODEL),
        weights={"source": "synthetic", "seed": 0},
        opset=17,
        batch=(1, 4, 8),
    )
    own = verification.get("fp32")
    manifest.add(graph, {"precision": "fp32", **({"verification": own} if own else {})})
    for key, summary in verification.items():
        manifest.record_verification(key, summary)
    manifest.write()
    return graph


def auto(path: Path, caplog, **kw):
    with caplog.at_level(logging.INFO, logger="msmlp"):
        backend = open_backend(onnx=path, **kw)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend auto")]
    assert len(lines) <= 1
    return backend, (lines[0] if lines else "")


@pytest.mark.cpu_features
@needs_bf16
def test_verified_bf16_is_the_default_for_an_fp32_graph(tmp_path, exported, caplog):
    graph = folder_with(
        tmp_path,
        exported,
        {"fp32": PASSED, "bf16": {**PASSED, "backend": "openvino", "file": "model.onnx", "hint": "bf16"}},
    )
    backend, line = auto(graph, caplog)
    assert isinstance(backend, OpenVINOBackend) and backend.hint == "bf16"
    assert "openvino bf16 for model.onnx" in line and "fastest verified: bf16 passed on openvino" in line
    assert backend.load().info.precision == "bf16"
    backend.close()


@pytest.mark.cpu_features
def test_verified_bf16_on_a_cpu_without_bf16_runs_onnxruntime(tmp_path, exported, caplog, monkeypatch):
    """The same record on a CPU without BF16 (simulated by the mask on any CPU): auto says why it
    passes over OpenVINO BF16, and an explicit --precision bf16 is one clear error."""
    monkeypatch.setenv("MSMLP_CPU_MASK", "bf16")
    graph = folder_with(
        tmp_path,
        exported,
        {"fp32": PASSED, "bf16": {**PASSED, "backend": "openvino", "file": "model.onnx", "hint": "bf16"}},
    )
    backend, line = auto(graph, caplog)
    assert isinstance(backend, OnnxRuntimeBackend) and "onnxruntime fp32 for model.onnx" in line
    assert "openvino bf16: the CPU has neither AMX (amx_bf16) nor AVX-512 BF16 (avx512_bf16)" in line
    with pytest.raises(
        InputError,
        match="--precision bf16 needs a backend that computes in bf16 here, but openvino: the CPU has neither",
    ):
        auto(graph, caplog, precision="bf16")


def test_failed_bf16_falls_back_to_the_verified_fp32_runtime(tmp_path, exported, caplog):
    graph = folder_with(
        tmp_path,
        exported,
        {"fp32": PASSED, "bf16": {**PASSED, "passed": False, "backend": "openvino", "file": "model.onnx"}},
    )
    backend, line = auto(graph, caplog)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert "onnxruntime fp32" in line and "openvino bf16 not verified" in line


def test_bf16_recorded_for_another_file_does_not_count(tmp_path, exported, caplog):
    graph = folder_with(
        tmp_path,
        exported,
        {"fp32": PASSED, "bf16": {**PASSED, "backend": "openvino", "file": "other.onnx"}},
    )
    backend, _ = auto(graph, caplog)
    assert isinstance(backend, OnnxRuntimeBackend)


def test_unverified_graph_keeps_its_own_precision(exported, caplog):
    backend, line = auto(exported, caplog)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.load().info.precision == "fp32"
    assert "unverified file (no model.json lists it): fastest at its own precision fp32" in line
    backend.close()


def uninstall(monkeypatch, module: str) -> None:
    """Make the backend selection see ``module`` as not installed."""
    real = registry.importlib.util.find_spec  # the table's probes are the one "is it installed" check
    monkeypatch.setattr(
        registry.importlib.util, "find_spec", lambda name: None if name == module else real(name)
    )


def test_without_onnxruntime_an_unverified_graph_runs_openvino_f32(exported, caplog, monkeypatch):
    uninstall(monkeypatch, "onnxruntime")
    backend, line = auto(exported, caplog)
    assert isinstance(backend, OpenVINOBackend) and backend.hint == "f32" and "openvino fp32" in line
    assert set(backend.load().info.details["execution_precision"]) == {"fp32"}
    backend.close()


def test_without_openvino_auto_runs_onnxruntime(exported, caplog, monkeypatch):
    uninstall(monkeypatch, "openvino")
    backend, line = auto(exported, caplog)
    assert isinstance(backend, OnnxRuntimeBackend) and "onnxruntime fp32" in line


@pytest.mark.cpu_features
@needs_bf16
def test_explicit_backend_and_precision_always_win(tmp_path, exported, caplog):
    graph = folder_with(
        tmp_path,
        exported,
        {"fp32": PASSED, "bf16": {**PASSED, "backend": "openvino", "file": "model.onnx"}},
    )
    backend, line = auto(graph, caplog, backend="onnxruntime")
    assert isinstance(backend, OnnxRuntimeBackend) and line == ""
    backend, line = auto(exported, caplog, precision="bf16")
    assert isinstance(backend, OpenVINOBackend) and backend.hint == "bf16"
    assert "asked for with --precision bf16; NOT verified for this file" in line


def test_int8_graph_needs_its_openvino_verification(tmp_path):
    from msmlp.artifacts import ArtifactInfo, TensorInfo

    info = ArtifactInfo(
        tmp_path / "model.int8.onnx",
        "onnx",
        "int8",
        (TensorInfo("input", (-1, 3, 8, 8)),),
        (TensorInfo("logits", (-1, 10)),),
    )
    available = {"onnxruntime", "openvino", "openvino+bf16"}
    verified = {"int8": PASSED, "int8_openvino": {**PASSED, "backend": "openvino", "hint": "bf16"}}
    pick = lambda rec: sel.choose(info, available, {}, recorded=rec)[0]  # noqa: E731
    assert (pick(verified).backend, pick(verified).hint) == ("openvino", "bf16")
    f32_only = {"int8": PASSED, "int8_openvino": {**PASSED, "backend": "openvino", "hint": "f32"}}
    assert (pick(f32_only).backend, pick(f32_only).hint) == ("openvino", "f32")
    assert pick({"int8": PASSED}).backend == "onnxruntime"
    assert (pick({}).backend, pick({}).hint) == ("openvino", "f32")  # unverified: no bf16 remainder
