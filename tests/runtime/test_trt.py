"""The TensorRT backend and the helpers it shares with the build.

Everywhere: refusal of unusable plans, plugin-library bookkeeping, the logger's severity gate, dtypes,
alignment, opening and freeing through stand-ins for TensorRT and cuda-python (trt_standins.py), and the
CUDA-graph logic (one context per captured shape; any capture failure frees what it made and falls back
once), driven through fake TensorRT/CUDA objects. With TensorRT and a GPU: real inference.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

import msmlp
from msmlp.artifacts import write_plan_sidecar
from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.errors import EngineError, InputError, MissingDependencyError
from msmlp.exporters import trt_common
from msmlp.exporters.trt_common import (
    LogForwarder,
    PluginLibraries,
    check_aligned,
    numpy_dtype,
    torch_dtype,
    trt_max_severity,
)
from msmlp.runtime import open_backend
from msmlp.runtime.trt import GraphCache, GraphSlot, TensorRTBackend
from msmlp.verify import compare, tolerance_for

NAME = "s2mlpv2_micro"


def _fake_plan(folder: Path) -> Path:
    plan = folder / "model.plan"
    plan.write_bytes(b"\x00" * 256)
    write_plan_sidecar(plan, {"model": NAME, "precision": "fp32", "tensorrt_version": "11.4.0.106",
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


# -- opening and freeing, through stand-ins for TensorRT and cuda-python -----------------------------------

STANDINS = Path(__file__).with_name("trt_standins.py")


def _standins(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, object]:
    spec = importlib.util.spec_from_file_location("trt_standins", STANDINS)
    standins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standins)
    modules: dict = {}
    cudart = standins.install(modules)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trt_common, "LIBRARIES", PluginLibraries())
    monkeypatch.setattr(trt_common, "_LOGGER", None)  # a stand-in logger, dropped afterwards
    monkeypatch.setattr(trt_common, "_share_with_polygraphy", lambda trt_logger: None)
    return standins, cudart


def test_a_late_load_failure_frees_what_was_opened(tmp_out: Path, monkeypatch) -> None:
    standins, cudart = _standins(monkeypatch)
    plan = tmp_out / "model.plan"
    plan.write_bytes(b"\x00" * 256)
    write_plan_sidecar(plan, standins.sidecar(described=False))  # the engine opens, its description fails
    backend = TensorRTBackend(plan)
    with pytest.raises(EngineError, match="names no input/output tensors"):
        backend.load()
    assert cudart.live == {} and not backend.loaded and backend._engine is None
    write_plan_sidecar(plan, standins.sidecar())
    with TensorRTBackend(plan) as opened:  # the same path when nothing fails: all of it is freed on close
        assert opened.batch_range == (1, 8)
        assert sorted(cudart.live.values()) == ["device"] * 3 + ["event"] * 2 + ["host"] * 2 + ["stream"]
    assert cudart.live == {}


OPEN_PLUGIN_PLAN = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import trt_standins
cudart = trt_standins.install()
from msmlp.runtime.trt import TensorRTBackend
before = set(sys.modules)
for name in ("triton", "onnx", "torch", "tensorrt.plugin", "msmlp.plugins"):  # as on a host without them
    sys.modules.setdefault(name, None)
backend = TensorRTBackend(sys.argv[2]).load()
heavy = ("triton", "torch", "onnx", "msmlp.plugins", "tensorrt.plugin")
new = [m for m in set(sys.modules) - before if sys.modules[m] is not None]
print(json.dumps({
    "loaded": backend.loaded,
    "imported": sorted(m for m in new if any(m == h or m.startswith(h + ".") for h in heavy)),
    "before": sorted(m for m in ("triton", "onnx", "torch") if m in before),
}))
"""


def test_opening_a_shift_plugin_plan_imports_no_triton_torch_or_onnx(tmp_out: Path) -> None:
    """An AOT plugin plan holds its kernels: opening it needs TensorRT only (no plugin definitions)."""
    spec = importlib.util.spec_from_file_location("trt_standins", STANDINS)
    standins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standins)
    plan = tmp_out / "plugins.plan"
    plan.write_bytes(b"\x00" * 256)
    write_plan_sidecar(plan, standins.sidecar(shift_plugins=True))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", OPEN_PLUGIN_PLAN, str(STANDINS.parent), str(plan)],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["loaded"] and result["imported"] == []
    # triton and onnx were never imported at all (nor torch: msmlp.models loads its families lazily)
    assert result["before"] == []  # neither triton, onnx nor torch


# -- plugin libraries: once per process, by resolved path (no TensorRT needed) ------------------------


class FakeRegistry:
    """Like TensorRT's: ``load_library`` returns None when the library's plugins are already registered."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def load_library(self, path: str) -> object | None:
        with self.lock:
            self.calls.append(path)
            return None if self.calls.count(path) > 1 else object()


def test_each_plugin_library_is_loaded_once_per_resolved_path(tmp_out: Path, monkeypatch) -> None:
    lib = tmp_out / "libshift.so"
    lib.write_bytes(b"\x7fELF")
    (tmp_out / "link.so").symlink_to(lib)
    monkeypatch.chdir(tmp_out)
    libraries, registry = PluginLibraries(), FakeRegistry()
    assert libraries.load(registry, [lib, "libshift.so", tmp_out / "link.so"]) == [str(lib)] * 3
    assert libraries.load(registry, [lib]) == [str(lib)]  # a second build or backend open
    assert registry.calls == [str(lib)] and libraries.loaded() == [str(lib)]
    with pytest.raises(InputError, match="plugin library 'missing.so' does not exist"):
        libraries.load(registry, ["missing.so"])
    with pytest.raises(EngineError, match="could not load the plugin library .*already registered"):
        PluginLibraries().load(registry, [lib])  # what the old code hit on its second load


def test_concurrent_opens_load_a_library_once(tmp_out: Path) -> None:
    lib = tmp_out / "libshift.so"
    lib.write_bytes(b"\x7fELF")
    libraries, registry = PluginLibraries(), FakeRegistry()
    threads = [threading.Thread(target=libraries.load, args=(registry, [lib])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.calls == [str(lib)]


def _fake_tensorrt(monkeypatch, registry: FakeRegistry) -> list:
    inits: list = []
    fake = types.SimpleNamespace(
        init_libnvinfer_plugins=lambda log, ns: inits.append(ns) or True,
        get_plugin_registry=lambda: registry,
    )
    monkeypatch.setattr(trt_common, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(trt_common, "process_logger", lambda: "the process logger")
    monkeypatch.setattr(trt_common, "LIBRARIES", PluginLibraries())
    return inits


def test_shift_plugins_register_once_and_need_their_module(monkeypatch) -> None:
    inits = _fake_tensorrt(monkeypatch, FakeRegistry())
    calls: list[int] = []
    module = types.ModuleType("msmlp.plugins.trt_plugin")
    module.register_trt_plugins = lambda: calls.append(1)
    monkeypatch.setitem(sys.modules, "msmlp.plugins.trt_plugin", module)
    for _ in range(3):
        trt_common.load_plugins([], shift_plugins=True)
    assert calls == [1] and inits == [""]
    monkeypatch.setattr(trt_common, "LIBRARIES", PluginLibraries())
    monkeypatch.setitem(sys.modules, "msmlp.plugins.trt_plugin", None)  # import -> ImportError
    with pytest.raises(MissingDependencyError, match="shift_plugins needs msmlp.plugins.trt_plugin"):
        trt_common.load_plugins([], shift_plugins=True)


# -- logger, dtypes, alignment ---------------------------------------------------------------------------


def test_logger_gates_by_severity_before_forwarding(caplog: pytest.LogCaptureFixture) -> None:
    assert [trt_max_severity(level) for level in (5, logging.DEBUG, logging.INFO, logging.ERROR)] == [
        4,
        3,
        2,
        1,
    ]
    forwarder = LogForwarder()
    with caplog.at_level(logging.INFO, logger="msmlp"):
        forwarder.refresh()
        for severity, text in enumerate(["fatal", "bad", "careful", "chatter", "noise"]):
            forwarder.forward(severity, text)
    assert [r.getMessage() for r in caplog.records] == [
        "tensorrt: fatal",
        "tensorrt: bad",
        "tensorrt: careful",
    ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="msmlp"):
        forwarder.refresh()
        forwarder.forward(3, "chatter")
        forwarder.forward(4, "noise")
    assert [r.getMessage() for r in caplog.records] == ["tensorrt: chatter"]


def test_errors_are_captured_per_thread() -> None:
    forwarder = LogForwarder()
    with forwarder.capture() as errors:
        forwarder.forward(1, "mine")
        other = threading.Thread(target=forwarder.forward, args=(1, "another thread's"))
        other.start()
        other.join()
        forwarder.forward(2, "a warning")
    assert errors == ["mine"]


@pytest.mark.parametrize(
    ("name", "numpy_name", "torch_name"),
    [("FLOAT", "float32", "float32"), ("HALF", "float16", "float16"), ("INT8", "int8", "int8"),
     ("INT64", "int64", "int64"), ("BOOL", "bool", "bool"), ("BF16", "bfloat16", "bfloat16"),
     ("FP8", "float8_e4m3fn", "float8_e4m3fn")],
)  # fmt: skip
def test_tensorrt_dtypes_map_to_numpy_and_torch(name: str, numpy_name: str, torch_name: str) -> None:
    import torch

    enum = types.SimpleNamespace(name=name)  # what trt.DataType.X looks like
    assert numpy_dtype(enum).name == numpy_name
    assert torch_dtype(enum) == getattr(torch, torch_name)


@pytest.mark.parametrize("name", ["INT4", "FP4"])
def test_packed_dtypes_are_refused_clearly(name: str) -> None:
    with pytest.raises(EngineError, match=f"TensorRT type {name}, which msmlp cannot feed or read"):
        numpy_dtype(types.SimpleNamespace(name=name))
    with pytest.raises(EngineError, match=f"TensorRT type {name}, which torch cannot hold"):
        torch_dtype(types.SimpleNamespace(name=name))


def test_misaligned_addresses_are_an_input_error() -> None:
    import torch

    check_aligned("input", 0x7F0000001000)
    base = torch.zeros(64, dtype=torch.float32)
    view = base[1:]  # 4 bytes past an aligned start
    with pytest.raises(InputError, match=r"not 256-byte aligned.*tensor.contiguous\(\).clone\(\)"):
        check_aligned("input", view.data_ptr() if base.data_ptr() % 256 == 0 else 0x7F0000001004)


# -- CUDA graphs: one context per captured shape, fallback on a refused capture (fakes) ------------------


class FakeContext:
    def __init__(self, fail_in_capture: bool = False) -> None:
        self.shapes: list[tuple] = []
        self.memory = None
        self.capturing = False
        self.fail_in_capture = fail_in_capture
        self.runs = 0

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = (ptr, size)

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self.shapes.append(tuple(shape))
        return shape[0] <= 8

    def get_tensor_shape(self, name: str) -> tuple:
        return (self.shapes[-1][0], 1000)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        return name in ("input", "logits")

    def execute_async_v3(self, stream: int) -> bool:
        self.runs += 1
        return not (self.capturing and self.fail_in_capture)


class FakeCudart:
    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self, backend: TensorRTBackend, fail: str = "") -> None:
        self.backend, self.calls, self.graphs = backend, [], 0
        self.fail = fail  # "begin" or "instantiate": that call returns an error
        self.destroyed: list[str] = []

    def cudaStreamSynchronize(self, stream):
        self.calls.append("sync")
        return (0,)

    def _contexts(self) -> list:
        return [s.context for s in self.backend._graphs.slots.values()] + self.backend._fake_new

    def cudaStreamBeginCapture(self, stream, mode):
        self.calls.append("begin")
        if self.fail == "begin":
            return (900,)  # cudaErrorStreamCaptureUnsupported
        for ctx in self._contexts():
            ctx.capturing = True
        return (0,)

    def cudaStreamEndCapture(self, stream):
        self.calls.append("end")
        failed = any(c.capturing and c.fail_in_capture for c in self._contexts())
        for ctx in self._contexts():
            ctx.capturing = False
        return (901, None) if failed else (0, "graph")

    def cudaGraphInstantiate(self, graph, flags):
        if self.fail == "instantiate":
            self.calls.append("instantiate failed")
            return (2, None)  # cudaErrorMemoryAllocation
        self.graphs += 1
        return (0, f"exec{self.graphs}")

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls.append(graph_exec)
        return (0,)

    def cudaGraphDestroy(self, graph):
        self.destroyed.append(graph)
        return (0,)

    def cudaGetLastError(self):
        self.calls.append("cleared")
        return (0,)


def _graph_backend(fail_in_capture: bool = False, fail: str = "") -> tuple[TensorRTBackend, FakeCudart]:
    backend = TensorRTBackend("unused.plan", cuda_graphs=True)
    backend._fake_new = []

    def create_execution_context(strategy: str) -> FakeContext:
        assert strategy == "USER_MANAGED"
        ctx = FakeContext(fail_in_capture)
        backend._fake_new.append(ctx)
        return ctx

    backend._trt = types.SimpleNamespace(
        ExecutionContextAllocationStrategy=types.SimpleNamespace(USER_MANAGED="USER_MANAGED")
    )
    backend._engine = types.SimpleNamespace(create_execution_context=create_execution_context)
    backend._context, backend._stream, backend._scratch = FakeContext(), 7, (0x10000, 4096)
    backend._buffers = {"input": 0x20000, "logits": 0x30000}
    backend._cudart = cudart = FakeCudart(backend, fail)
    return backend, cudart


def test_each_captured_shape_has_its_own_context_and_graph() -> None:
    backend, cudart = _graph_backend()
    for batch in (4, 2, 4, 2):
        backend._execute((batch, 3, 8, 8))
    slots = backend._graphs.slots
    assert sorted(slots) == [(2, 3, 8, 8), (4, 3, 8, 8)]
    assert all(s.context.shapes == [shape] for shape, s in slots.items())  # set once, never changed
    assert all(s.context.memory == (0x10000, 4096) for s in slots.values())  # shared scratch memory
    # the warm-up enqueue after each shape change is synchronized before the capture begins
    assert cudart.calls == [
        "sync",
        "begin",
        "end",
        "exec1",
        "sync",
        "begin",
        "end",
        "exec2",
        "exec1",
        "exec2",
    ]
    assert all(s.context.runs == 2 for s in slots.values())  # warm-up, then the captured enqueue
    assert backend._context.runs == 0  # the graphs ran, not the main context


def test_graph_cache_only_returns_a_graph_for_the_shape_it_was_captured_with() -> None:
    cache = GraphCache()
    slot = cache.add(GraphSlot(context="ctx4", shape=(4, 3, 8, 8), graph="g", graph_exec="e"))
    assert cache.get((4, 3, 8, 8)) is slot and cache.get((2, 3, 8, 8)) is None
    slot.shape = (2, 3, 8, 8)  # a slot whose context was re-shaped is not replayed for its old key
    assert cache.get((4, 3, 8, 8)) is None
    with pytest.raises(EngineError, match="already cached"):
        cache.add(GraphSlot(context="other", shape=(4, 3, 8, 8)))


def test_a_refused_capture_ends_it_and_falls_back_once(caplog: pytest.LogCaptureFixture) -> None:
    backend, cudart = _graph_backend(fail_in_capture=True)
    with caplog.at_level(logging.WARNING, logger="msmlp"):
        backend._execute((4, 3, 8, 8))
        backend._execute((2, 3, 8, 8))
    assert cudart.calls == ["sync", "begin", "end", "cleared"]  # the capture was ended, the error cleared
    assert not backend.cuda_graphs and backend._graphs.slots == {}
    assert backend._context.runs == 2  # both calls ran without graphs
    assert caplog.text.count("running without CUDA graphs") == 1


@pytest.mark.parametrize("fail", ["begin", "instantiate"])
def test_a_failed_begin_or_instantiate_falls_back_once_and_frees_the_graph(
    fail: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend, cudart = _graph_backend(fail=fail)
    with caplog.at_level(logging.WARNING, logger="msmlp"):
        for batch in (4, 4, 2):
            backend._execute((batch, 3, 8, 8))  # no exception: the calls run without graphs
    ended = ["end", "instantiate failed"] if fail == "instantiate" else []
    assert cudart.calls == ["sync", "begin", *ended, "cleared"]  # one attempt, not one per call
    assert cudart.destroyed == (["graph"] if fail == "instantiate" else [])  # the captured graph is freed
    assert not backend.cuda_graphs and backend._graphs.slots == {}
    assert backend._context.runs == 3
    assert caplog.text.count("running without CUDA graphs") == 1
    reason = "cudaGraphInstantiate error 2" if fail == "instantiate" else "cudaStreamBeginCapture error 900"
    assert reason in caplog.text


def test_shape_and_address_results_are_checked() -> None:
    backend, _ = _graph_backend()
    with pytest.raises(InputError, match=r"TensorRT rejected input shape \(9, 3, 8, 8\)"):
        backend._set_shape(backend._context, (9, 3, 8, 8))
    with pytest.raises(EngineError, match="refused the address of tensor 'other'"):
        backend._set_addresses(backend._context, {"other": 0x40000})
    with pytest.raises(InputError, match="not 256-byte aligned"):
        backend._set_addresses(backend._context, {"input": 0x40004})


# -- on a GPU with TensorRT -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """FP32, FP16 and INT8 plans of the micro model (profile 1..8), and the PyTorch reference."""
    pytest.importorskip(
        "modelopt.onnx", reason="the FP16/INT8 graphs need ModelOpt: pip install 'nvidia-modelopt[onnx]'"
    )
    try:
        trt_common.load_cudart()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    from msmlp.data.transforms import builtin_images
    from msmlp.exporters.calibration import calibration_batch, split_calibration
    from msmlp.exporters.engine import build_engine
    from msmlp.exporters.onnx import export_onnx
    from msmlp.exporters.precision import convert_fp16
    from msmlp.exporters.quantize import quantize_int8
    from msmlp.models.weights import make_contributing

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
        for batch in (4, 2, 4, 2):  # capture two sizes, then replay each after the other ran
            stats = compare(plain(x[:batch]), graphed(x[:batch]))
            assert not tolerance_for("fp32").failures(stats), (batch, stats)  # two engines: not bit-exact
        assert sorted(shape[0] for shape in graphed._graphs.slots) == [2, 4] and graphed.cuda_graphs


@pytest.mark.tensorrt
def test_infer_torch_runs_on_cuda_tensors(engines: dict, image_paths) -> None:
    import torch

    x = _inputs(image_paths, engines["config"], 4)
    with TensorRTBackend(engines["plans"]["fp32"]) as backend:
        expected = backend(x)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):  # the input is produced on a non-default stream, read back on it
            source = torch.from_numpy(x).pin_memory().cuda(non_blocking=True) * 1.0
            out = backend.infer_torch(source)
            got = out.cpu().numpy()  # ordered after the engine by the event, no explicit sync
        assert out.is_cuda and tuple(out.shape) == (4, 1000)
        assert not tolerance_for("fp32").failures(compare(expected, got))
        late = backend.infer_torch(torch.from_numpy(x).cuda())
        misaligned = torch.zeros(x.size + 1, device="cuda")[1:].view(x.shape)
        with pytest.raises(InputError, match="not 256-byte aligned"):
            backend.infer_torch(misaligned)
        with pytest.raises(InputError, match="needs a torch tensor on cuda:0"):
            backend.infer_torch(torch.from_numpy(x))
        with pytest.raises(InputError, match="outside the engine's profile"):
            backend.infer_torch(torch.zeros((9, 3, 112, 112), device="cuda"))
    # close() waited for the queued work before freeing the engine's memory
    assert not tolerance_for("fp32").failures(compare(expected, late.cpu().numpy()))


@pytest.mark.tensorrt
def test_plugins_register_once_per_process_with_tensorrt() -> None:
    import tensorrt as trt

    trt_common.load_plugins([])
    trt_common.load_plugins([])  # a second build/open: no second registration, no error
    registry = trt.get_plugin_registry()
    assert len(registry.all_creators) > 0  # TensorRT's own plugins
    try:
        trt_common.load_plugins([], shift_plugins=True)
    except MissingDependencyError as exc:  # tensorrt.plugin or triton absent
        pytest.skip(str(exc))
    trt_common.load_plugins([], shift_plugins=True)
    names = {getattr(c, "name", None) for c in registry.all_creators}
    assert {"GroupRoll", "EdgeShift"} <= names, sorted(map(str, names))


@pytest.mark.tensorrt
def test_wrong_model_is_refused_before_deserializing(engines: dict) -> None:
    with pytest.raises(EngineError, match="built for model 's2mlpv2_micro', expected 'msmlp_micro'"):
        TensorRTBackend(engines["plans"]["fp32"], expected_model="msmlp_micro").load()
