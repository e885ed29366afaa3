"""Stand-ins for the ``tensorrt`` module and cuda-python's ``cuda.bindings.runtime``, enough for
``TensorRTBackend`` to open a plan and free it, and counting what is still allocated.

Standard library and numpy only: a subprocess that installs them imports nothing else, so it can check
what opening a plan imports. Not a test module; test_trt.py and its subprocess load it by path.
"""

from __future__ import annotations

import ctypes
import sys
import types
from typing import Any

TENSORRT_VERSION = "11.4.0.106"
GPU = {"name": "NVIDIA H100", "compute_capability": "9.0"}
PROFILE = ((1, 3, 112, 112), (4, 3, 112, 112), (8, 3, 112, 112))


class FakeContext:
    def __init__(self) -> None:
        self.shape: tuple[int, ...] = PROFILE[2]

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = (ptr, size)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shape[0], 1000)


class FakeEngine:
    num_io_tensors = 2
    device_memory_size_v2 = 4096

    def get_tensor_name(self, index: int) -> str:
        return ("input", "logits")[index]

    def get_tensor_mode(self, name: str) -> Any:
        return types.SimpleNamespace(name="INPUT" if name == "input" else "OUTPUT")

    def get_tensor_dtype(self, name: str) -> Any:
        return types.SimpleNamespace(name="FLOAT")

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple:
        return PROFILE

    def create_execution_context(self, strategy: Any = None) -> FakeContext:
        return FakeContext()


def fake_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = TENSORRT_VERSION

    class ILogger:
        def __init__(self) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
            return FakeEngine()

    registry = types.SimpleNamespace(load_library=lambda path: object())
    trt.ILogger, trt.Runtime = ILogger, Runtime
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    trt.get_plugin_registry = lambda: registry
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(USER_MANAGED="USER_MANAGED")
    return trt


class FakeCudart(types.ModuleType):
    """Device pointers are numbers; pinned host memory is real (the backend wraps it in numpy arrays)."""

    cudaStreamNonBlocking = 1
    cudaEventDisableTiming = 2

    def __init__(self) -> None:
        super().__init__("cuda.bindings.runtime")
        self.live: dict[int, str] = {}  # handle -> what it is, until freed
        self._host: dict[int, Any] = {}
        self._next = 0x7F0000000000

    def _new(self, kind: str) -> int:
        self._next += 1 << 20  # 1 MiB apart: 256-byte aligned
        self.live[self._next] = kind
        return self._next

    def _free(self, handle: int, kind: str) -> tuple[int]:
        assert self.live.pop(int(handle)) == kind, f"freed {handle:#x} as {kind}"
        return (0,)

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (0,)

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return (0, 1)

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, Any]:
        return (0, types.SimpleNamespace(name=GPU["name"].encode(), major=9, minor=0))

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        return (0, self._new("device"))

    def cudaFree(self, ptr: int) -> tuple[int]:
        return self._free(ptr, "device")

    def cudaMallocHost(self, nbytes: int) -> tuple[int, int]:
        buffer = ctypes.create_string_buffer(nbytes + 256)
        ptr = (ctypes.addressof(buffer) + 255) // 256 * 256
        self._host[ptr] = buffer
        self.live[ptr] = "host"
        return (0, ptr)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:
        self._host.pop(int(ptr))
        return self._free(ptr, "host")

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[int, int]:
        return (0, self._new("stream"))

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        return self._free(stream, "stream")

    def cudaEventCreateWithFlags(self, flags: int) -> tuple[int, int]:
        return (0, self._new("event"))

    def cudaEventDestroy(self, event: int) -> tuple[int]:
        return self._free(event, "event")

    def cudaGetErrorName(self, err: int) -> tuple[int, bytes]:
        return (0, b"cudaErrorStandIn")

    def cudaGetErrorString(self, err: int) -> tuple[int, bytes]:
        return (0, b"stand-in error")


def install(modules: dict[str, Any] | None = None) -> FakeCudart:
    """Put the stand-ins into ``modules`` (``sys.modules`` by default); return the fake cudart."""
    modules = sys.modules if modules is None else modules
    cudart = FakeCudart()
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, cudart
    modules.update({"tensorrt": fake_tensorrt(), "cuda": cuda, "cuda.bindings": bindings,
                    "cuda.bindings.runtime": cudart})  # fmt: skip
    return cudart


def sidecar(shift_plugins: bool = False, described: bool = True) -> dict[str, Any]:
    """What ``msmlp build`` writes next to a plan; ``described=False`` leaves out the model and I/O tensors."""
    meta: dict[str, Any] = {"precision": "fp32", "tensorrt_version": TENSORRT_VERSION,
                            "gpu": GPU, "plugins": [], "shift_plugins": shift_plugins}  # fmt: skip
    if described:
        meta["model"] = "s2mlpv2_micro"
        meta["inputs"] = [{"name": "input", "shape": [-1, 3, 112, 112], "dtype": "float32"}]
        meta["outputs"] = [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]
        meta["profile"] = {"input": "input", "min": list(PROFILE[0]), "opt": list(PROFILE[1]),
                           "max": list(PROFILE[2])}  # fmt: skip
    return meta
