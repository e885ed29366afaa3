"""TensorRT engine build and the plan metadata check.

The metadata check, the availability report and the CLI's failure line run everywhere; the builds
need TensorRT and a GPU and skip (with the reason) where they are absent.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.cli import main as cli_main
from msmlp.errors import EngineError, ExportError, InputError, MissingDependencyError
from msmlp.export import engine
from msmlp.export.engine import (
    build_engine,
    check_plan_metadata,
    describe_onnx,
    sidecar_path,
    tensorrt_available,
    write_plan_metadata,
)
from msmlp.export.onnx import export_onnx

HERE = {
    "tensorrt_version": "11.4.0.106",
    "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
}


@pytest.fixture(scope="module")
def micro_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from msmlp.models.weights import make_contributing

    model = make_contributing(msmlp.create_model("s2mlpv2_micro"), seed=0).eval()
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(model, out, config=model.deploy_config, batch=(1, 4, 8), model_name="s2mlpv2_micro")


@pytest.fixture
def plan(tmp_out: Path) -> Path:
    """A plan file (opaque bytes: only its hash matters here) with the sidecar a build writes."""
    path = tmp_out / "model.fp16.plan"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    write_plan_metadata(path, {"model": "s2mlpv2_small", "precision": "fp16", **HERE})
    return path


# -- the metadata check (pure: no TensorRT needed) -------------------------------------------------------


def test_matching_plan_passes_and_returns_its_metadata(plan: Path) -> None:
    meta = check_plan_metadata(plan, {"model": "s2mlpv2_small", "precision": "fp16"}, current=HERE)
    assert meta["model"] == "s2mlpv2_small" and meta["plan_bytes"] == 4096
    assert json.loads(sidecar_path(plan).read_text())["plan_sha256"] == meta["plan_sha256"]


def test_modified_plan_is_refused(plan: Path) -> None:
    data = bytearray(plan.read_bytes())
    data[100] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="does not match its metadata .*modified or is corrupt"):
        check_plan_metadata(plan, current=HERE)


def test_plan_without_sidecar_is_refused(plan: Path) -> None:
    sidecar_path(plan).unlink()
    with pytest.raises(EngineError, match="has no metadata file model.fp16.plan.json.*untrusted"):
        check_plan_metadata(plan, current=HERE)


@pytest.mark.parametrize(
    ("current", "message"),
    [
        (
            {**HERE, "tensorrt_version": "10.13.3.9"},
            r"built with TensorRT 11.4.0.106, this machine has 10.13.3.9",
        ),
        (
            {**HERE, "gpu": {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}},
            r"compute capability 9.0 \(NVIDIA H100 80GB HBM3\), this GPU is 8.0",
        ),
    ],
)
def test_other_tensorrt_or_gpu_architecture_is_refused(plan: Path, current: dict, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        check_plan_metadata(plan, current=current)


def test_other_model_or_precision_is_refused(plan: Path) -> None:
    with pytest.raises(EngineError, match="built for model 's2mlpv2_small', expected 'msmlp_tiny'"):
        check_plan_metadata(plan, {"model": "msmlp_tiny"}, current=HERE)
    with pytest.raises(EngineError, match="built for precision 'fp16', expected 'int8'"):
        check_plan_metadata(plan, {"precision": "int8"}, current=HERE)


def test_same_architecture_other_gpu_only_warns(plan: Path, caplog: pytest.LogCaptureFixture) -> None:
    h200 = {**HERE, "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0"}}
    with caplog.at_level(logging.WARNING, logger="msmlp"):
        check_plan_metadata(plan, current=h200)
    assert "was built on NVIDIA H100 80GB HBM3 and runs on NVIDIA H200" in caplog.text


def test_unreadable_or_foreign_sidecar_is_refused(plan: Path, tmp_out: Path) -> None:
    sidecar_path(plan).write_text("{not json")
    with pytest.raises(EngineError, match="unreadable"):
        check_plan_metadata(plan, current=HERE)
    sidecar_path(plan).write_text(json.dumps({"plan_sha256": "0" * 64}))
    with pytest.raises(EngineError, match="not an msmlp plan description"):
        check_plan_metadata(plan, current=HERE)
    with pytest.raises(InputError, match="does not exist"):
        check_plan_metadata(tmp_out / "missing.plan", current=HERE)


def test_file_checks_come_before_looking_for_tensorrt(plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``current``, a modified plan is refused before TensorRT is even looked up."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan.write_bytes(b"tampered")
    with pytest.raises(EngineError, match="modified or is corrupt"):
        check_plan_metadata(plan)
    write_plan_metadata(plan, {"model": "m", **HERE})
    with pytest.raises(MissingDependencyError, match="pip install"):
        check_plan_metadata(plan)  # intact plan: now the machine must be asked, and TensorRT is missing


# -- availability, arguments, CLI (no TensorRT needed) --------------------------------------------------


def test_tensorrt_available_names_the_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    ok, reason = tensorrt_available()
    assert not ok
    assert "TensorRT is not installed" in reason and "pip install 'msmlp[tensorrt]'" in reason


def test_build_without_tensorrt_is_one_clear_error(micro_onnx: Path, tmp_out: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(
        MissingDependencyError, match="cannot build a TensorRT engine: TensorRT is not installed"
    ):
        build_engine(
            micro_onnx, tmp_out / "m.plan", batch=(1, 4, 8), input_name="input", input_shape=(3, 112, 112)
        )
    assert list(tmp_out.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": (4, 2, 8)}, r"batch profile \(4, 2, 8\) must be three integers MIN <= OPT <= MAX"),
        ({"batch": (0, 1, 8)}, "batch profile"),
        ({"input_shape": (3, 112)}, "input shape"),
        ({"workspace_gib": 0}, "workspace 0 GiB must be positive"),
        ({"opt_level": 7}, "optimisation level 7 must be one of 0..5"),
        (
            {"plugins": [Path("/nonexistent/libplugin.so")]},
            "plugin library '/nonexistent/libplugin.so' does not exist",
        ),
    ],
)
def test_bad_build_arguments_fail_before_tensorrt(
    micro_onnx: Path, tmp_out: Path, kwargs: dict, message: str
) -> None:
    args = {"batch": (1, 4, 8), "input_name": "input", "input_shape": (3, 112, 112), **kwargs}
    with pytest.raises(InputError, match=message):
        build_engine(micro_onnx, tmp_out / "m.plan", **args)


def test_describe_onnx_reads_the_export_metadata(micro_onnx: Path) -> None:
    info = describe_onnx(micro_onnx)
    assert info == {
        "input_name": "input",
        "input_shape": (3, 112, 112),
        "model": "s2mlpv2_micro",
        "batch": (1, 4, 8),
        "precision": "fp32",
    }


def test_cli_build_without_tensorrt_prints_one_line(
    micro_onnx: Path, tmp_out: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    rc = cli_main(["build", str(micro_onnx), "--out", str(tmp_out / "m.plan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("msmlp: error: cannot build a TensorRT engine")
    assert "pip install" in err[0] and "Traceback" not in err[0]
    assert cli_main(["build", str(micro_onnx), "--batch", "8,4"]) == 2
    assert "--batch '8,4' is invalid; expected MIN,OPT,MAX" in capsys.readouterr().err


# -- builds (TensorRT and a GPU) ------------------------------------------------------------------------


@pytest.mark.tensorrt
def test_build_writes_plan_sidecar_and_timing_cache(
    micro_onnx: Path, tmp_out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_out / "timing.cache"
    meta = build_engine(
        micro_onnx, tmp_out / "m.plan", batch=(1, 4, 8), input_name="input", input_shape=(3, 112, 112),
        workspace_gib=1.0, opt_level=2, timing_cache=cache, metadata={"model": "s2mlpv2_micro", "precision": "fp32"},
    )  # fmt: skip
    assert (tmp_out / "m.plan").stat().st_size == meta["plan_bytes"] > 0
    assert meta["profile"] == {"input": "input", "min": [1, 3, 112, 112], "opt": [4, 3, 112, 112],
                               "max": [8, 3, 112, 112]}  # fmt: skip
    assert meta["gpu"]["compute_capability"] and meta["onnx_sha256"] == engine.file_sha256(micro_onnx)
    assert cache.stat().st_size > 0
    assert check_plan_metadata(tmp_out / "m.plan", {"model": "s2mlpv2_micro"}) == meta
    assert sorted(p.name for p in tmp_out.iterdir()) == ["m.plan", "m.plan.json", "timing.cache"]
    with caplog.at_level(logging.INFO, logger="msmlp"):
        again = build_engine(
            micro_onnx, tmp_out / "m2.plan", batch=(1, 4, 8), input_name="input", input_shape=(3, 112, 112),
            workspace_gib=1.0, opt_level=2, timing_cache=cache,
        )  # fmt: skip
    assert f"reusing timing cache {cache}" in caplog.text
    assert again["onnx_sha256"] == meta["onnx_sha256"] and "model" not in again


@pytest.mark.tensorrt
def test_parser_errors_are_all_reported(tmp_out: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["input"], ["logits"], name="bogus", domain="example.invalid")
    graph = helper.make_graph(
        [node], "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.invalid", 1)]
    )
    onnx.save(model, tmp_out / "bad.onnx")
    with pytest.raises(
        ExportError, match=r"ONNX parser rejected .*bad.onnx with \d+ error\(s\): \[1\] node 0 \(bogus"
    ):
        build_engine(tmp_out / "bad.onnx", tmp_out / "bad.plan", batch=(1, 1, 2), input_name="input",
                     input_shape=(3, 8, 8))  # fmt: skip
    assert not (tmp_out / "bad.plan").exists()
