"""TensorRT engine build and the plan metadata check.

The metadata check, the availability report and the CLI's failure line run everywhere; the builds
need TensorRT and a GPU and skip (with the reason) where they are absent.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.artifacts import plan_sidecar_path, read_artifact, write_plan_sidecar
from msmlp.cli import main as cli_main
from msmlp.errors import EngineError, ExportError, InputError, MissingDependencyError
from msmlp.exporters import engine, trt_common
from msmlp.exporters.engine import build_engine, polygraphy_logging, tensorrt_available
from msmlp.exporters.onnx import export_onnx
from msmlp.exporters.trt_common import check_plan_metadata, read_checked_plan
from msmlp.fileio import file_sha256

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
    write_plan_sidecar(path, {"model": "s2mlpv2_small", "precision": "fp16", **HERE})
    return path


# -- the metadata check (pure: no TensorRT needed) -------------------------------------------------------


def test_matching_plan_passes_and_returns_its_metadata(plan: Path) -> None:
    meta = check_plan_metadata(plan, {"model": "s2mlpv2_small", "precision": "fp16"}, current=HERE)
    assert meta["model"] == "s2mlpv2_small" and meta["plan_bytes"] == 4096
    assert json.loads(plan_sidecar_path(plan).read_text())["plan_sha256"] == meta["plan_sha256"]


def test_modified_plan_is_refused(plan: Path) -> None:
    data = bytearray(plan.read_bytes())
    data[100] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="does not match its metadata .*modified or is corrupt"):
        check_plan_metadata(plan, current=HERE)


def test_plan_without_sidecar_is_refused(plan: Path) -> None:
    plan_sidecar_path(plan).unlink()
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
    plan_sidecar_path(plan).write_text("{not json")
    with pytest.raises(EngineError, match="unreadable"):
        check_plan_metadata(plan, current=HERE)
    plan_sidecar_path(plan).write_text(json.dumps({"plan_sha256": "0" * 64}))
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
    write_plan_sidecar(plan, {"model": "m", **HERE})
    with pytest.raises(MissingDependencyError, match="pip install"):
        check_plan_metadata(plan)  # intact plan: now the machine must be asked, and TensorRT is missing


def test_plan_is_read_once_and_those_bytes_are_checked(plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes that are hashed are the bytes returned for deserialization: no second read from disk."""
    reads: list[Path] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    monkeypatch.setattr(trt_common, "file_sha256", lambda path: pytest.fail("the file was hashed again"))
    data, meta = read_checked_plan(plan, current=HERE)
    assert reads == [plan] and len(data) == meta["plan_bytes"] == 4096
    swapped = bytearray(data)
    swapped[0] ^= 0xFF  # the file on disk is intact; the bytes in hand are not
    with pytest.raises(EngineError, match="modified or is corrupt"):
        check_plan_metadata(plan, current=HERE, plan_bytes=bytes(swapped))


class FakeTensorRT:
    __version__ = "11.4.0.106"

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class ProfilingVerbosity:  # members carry .name, as the pybind enum's do
        LAYER_NAMES_ONLY = types.SimpleNamespace(name="LAYER_NAMES_ONLY")
        DETAILED = types.SimpleNamespace(name="DETAILED")


def test_build_writes_a_sidecar_that_describes_the_plan(
    micro_onnx: Path, tmp_out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything around TensorRT's build, with the build itself replaced: the sidecar says what the plan is."""
    monkeypatch.setattr(engine, "tensorrt_available", lambda device=0: (True, "fake"))
    monkeypatch.setattr(engine, "import_tensorrt", lambda: FakeTensorRT)
    monkeypatch.setattr(engine, "current_gpu", lambda device=0: HERE["gpu"])
    monkeypatch.setattr(engine, "set_device", lambda device: None)
    monkeypatch.setattr(engine, "load_plugins", lambda paths, shift_plugins=False: [])
    verbosities: list = []
    monkeypatch.setattr(engine, "_build_plan", lambda *a: verbosities.append(a[-1]) or b"\x01" * 512)
    meta = build_engine(micro_onnx, tmp_out / "m.plan", batch=(1, 4, 8), input_name="input",
                        input_shape=(3, 112, 112), metadata={"precision": "fp32"})  # fmt: skip
    assert verbosities == [
        FakeTensorRT.ProfilingVerbosity.LAYER_NAMES_ONLY
    ]  # chosen, not Polygraphy's default
    assert meta["profiling_verbosity"] == "LAYER_NAMES_ONLY"
    assert (tmp_out / "m.plan").read_bytes() == b"\x01" * 512 and meta["plan_bytes"] == 512
    info = read_artifact(tmp_out / "m.plan")
    assert (info.kind, info.model, info.precision, info.batch) == ("plan", "s2mlpv2_micro", "fp32", (1, 4, 8))
    assert [t.to_dict() for t in info.inputs] == [
        {"name": "input", "shape": [-1, 3, 112, 112], "dtype": "float32"}
    ]
    assert [t.to_dict() for t in info.outputs] == [
        {"name": "logits", "shape": [-1, 1000], "dtype": "float32"}
    ]
    assert info.config is not None and info.config.input_size == (3, 112, 112)
    assert check_plan_metadata(tmp_out / "m.plan", {"model": "s2mlpv2_micro"}, current=HERE) == meta
    detailed = build_engine(micro_onnx, tmp_out / "d.plan", batch=(1, 4, 8), input_name="input",
                            input_shape=(3, 112, 112), detailed_layers=True)  # fmt: skip
    assert verbosities[-1] is FakeTensorRT.ProfilingVerbosity.DETAILED
    assert detailed["profiling_verbosity"] == "DETAILED"
    assert meta["plugin_ptx"] == detailed["plugin_ptx"] == {}  # no shift plugins, no embedded PTX
    from msmlp.plugins import trt_plugin

    compiled = {"edge_shift_kernel": {"ptx_isa": "9.4", "target": "sm_90a"}}
    monkeypatch.setattr(trt_plugin, "_compiled", compiled)  # what the build's aot_impl calls recorded
    plugins = build_engine(micro_onnx, tmp_out / "p.plan", batch=(1, 4, 8), input_name="input",
                           input_shape=(3, 112, 112), shift_plugins=True)  # fmt: skip
    assert (
        plugins["plugin_ptx"] == compiled
        and read_artifact(tmp_out / "p.plan").extra["plugin_ptx"] == compiled
    )


def test_polygraphy_messages_go_to_the_log_not_stdout(capsys: pytest.CaptureFixture, caplog) -> None:
    from polygraphy.logger import G_LOGGER

    before = (G_LOGGER.use_python_logging_system, G_LOGGER.colors)
    with caplog.at_level(logging.WARNING, logger="msmlp"), polygraphy_logging() as errors:
        G_LOGGER.info("chatter")
        G_LOGGER.warning("careful")
        G_LOGGER.error("In node 0 (bogus): INVALID_NODE")
    assert errors == ["In node 0 (bogus): INVALID_NODE"]
    assert capsys.readouterr().out == ""
    assert "careful" in caplog.text and "chatter" not in caplog.text
    assert (G_LOGGER.use_python_logging_system, G_LOGGER.colors) == before


def test_the_polygraphy_loaders_accept_our_arguments() -> None:
    """The keyword arguments the build passes exist in the installed Polygraphy (no TensorRT needed)."""
    pg = engine._polygraphy()
    profile = pg.Profile().add("input", (1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))
    config = pg.CreateConfig(profiles=[profile], memory_pool_limits={"WORKSPACE": 1 << 30},
                             builder_optimization_level=2, tf32=False, profiling_verbosity="LAYER_NAMES_ONLY")  # fmt: skip
    assert config.builder_optimization_level == 2 and config.tf32 is False
    assert config.profiling_verbosity == "LAYER_NAMES_ONLY"
    assert pg.NetworkFromOnnxPath("m.onnx", strongly_typed=True).strongly_typed
    assert pg.EngineBytesFromNetwork((None, None, None), config=lambda builder, network: None)


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


def test_read_artifact_gives_what_a_build_needs(micro_onnx: Path) -> None:
    info = read_artifact(micro_onnx)
    assert (info.input.name, info.input.shape) == ("input", (-1, 3, 112, 112))
    assert (info.model, info.batch, info.precision) == ("s2mlpv2_micro", (1, 4, 8), "fp32")
    assert not hasattr(engine, "describe_onnx") and not hasattr(engine, "sidecar_path")


def test_cli_build_without_tensorrt_prints_one_line(
    micro_onnx: Path, tmp_out: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    rc = cli_main(["build", str(micro_onnx), "--out", str(tmp_out / "m.plan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == MissingDependencyError.exit_code == 4
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
    assert meta["gpu"]["compute_capability"] and meta["onnx_sha256"] == file_sha256(micro_onnx)
    assert cache.stat().st_size > 0
    assert check_plan_metadata(tmp_out / "m.plan", {"model": "s2mlpv2_micro"}) == meta
    assert sorted(p.name for p in tmp_out.iterdir()) == ["m.plan", "m.plan.json", "timing.cache"]
    with caplog.at_level(logging.INFO, logger="msmlp"):
        again = build_engine(
            micro_onnx, tmp_out / "m2.plan", batch=(1, 4, 8), input_name="input", input_shape=(3, 112, 112),
            workspace_gib=1.0, opt_level=2, timing_cache=cache,
        )  # fmt: skip
    assert f"reusing timing cache {cache}" in caplog.text
    assert again["onnx_sha256"] == meta["onnx_sha256"] and again["model"] == "s2mlpv2_micro"  # from the graph
    info = read_artifact(tmp_out / "m.plan")
    assert (
        info.input.shape == (-1, 3, 112, 112) and info.output.shape == (-1, 1000) and info.batch == (1, 4, 8)
    )


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
    with pytest.raises(ExportError, match=r"ONNX parser rejected .*bad.onnx: .*(bogus|NoSuchOp)"):
        build_engine(tmp_out / "bad.onnx", tmp_out / "bad.plan", batch=(1, 1, 2), input_name="input",
                     input_shape=(3, 8, 8))  # fmt: skip
    assert not (tmp_out / "bad.plan").exists()
