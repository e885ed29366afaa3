"""What the engine build (export) and the TensorRT runtime share: loading TensorRT and cuda-python, the
CUDA device, the one process-wide TensorRT logger, plugin libraries, dtypes, and the plan check.

Process-wide on purpose: TensorRT keeps a single logger pointer per process (a second logger passed to a
builder or runtime is ignored with a warning) and the plugin library keeps the raw pointer it was given, so
one logger lives as long as the process. The plugin registry refuses a library whose plugins are already
registered (``IPluginRegistry::loadLibrary`` returns nullptr), so each library is loaded once per process.
TensorRT and cuda-python are imported only inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msmlp.artifacts import read_plan_sidecar
from msmlp.errors import EngineError, InputError, MissingDependencyError
from msmlp.fileio import file_sha256
from msmlp.log import logger

if TYPE_CHECKING:  # never imported at run time; lets shared/tools/trt_api_names.py check this file
    import tensorrt as trt  # noqa: F401

TRT_INSTALL = "pip install 'msmlp[tensorrt]' (TensorRT and cuda-python; needs an NVIDIA GPU and driver)"
ALIGNMENT = 256  # IExecutionContext::setTensorAddress: "The pointer must have at least 256-byte alignment."

# -- TensorRT, cuda-python and the current machine --------------------------------------------------------


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or one :class:`MissingDependencyError` naming the install command."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            f"TensorRT is not installed ({exc}); install it with: {TRT_INSTALL}"
        ) from exc
    except Exception as exc:  # the bindings without libnvinfer raise OSError and friends
        logger.debug("importing tensorrt failed", exc_info=True)
        raise MissingDependencyError(
            f"TensorRT is installed but cannot be loaded ({type(exc).__name__}: {exc}); {TRT_INSTALL}"
        ) from exc
    return trt


def tensorrt_available(device: int = 0) -> tuple[bool, str]:
    """Whether an engine can be built here, and why not (with the install command) if it cannot."""
    try:
        trt = import_tensorrt()
        gpu = current_gpu(device)
    except MissingDependencyError as exc:
        return False, str(exc)
    except EngineError as exc:
        return False, f"TensorRT is installed but {exc}"
    return (
        True,
        f"TensorRT {trt.__version__} on {gpu['name']} (compute capability {gpu['compute_capability']})",
    )


def load_cudart() -> Any:
    """The CUDA runtime bindings of cuda-python (new module path first, then the pre-12.8 one)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise MissingDependencyError(
                f"TensorRT engines need NVIDIA cuda-python for device memory and streams ({exc}); "
                f"install it with: {TRT_INSTALL}"
            ) from exc
    return cudart


def cuda_call(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple; raise :class:`EngineError` on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        cudart = load_cudart()
        _, name = cudart.cudaGetErrorName(err)
        _, text = cudart.cudaGetErrorString(err)
        raise EngineError(f"CUDA call {what} failed: {_text(name)} ({_text(text)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def set_device(device: int) -> Any:
    """Make ``device`` current in the calling thread (CUDA's current device is per thread); return cudart."""
    cudart = load_cudart()
    cuda_call(cudart.cudaSetDevice(int(device)), f"cudaSetDevice({device})")
    return cudart


def current_gpu(device: int = 0) -> dict[str, str]:
    """Name and compute capability of a CUDA device, e.g. ``{"name": "NVIDIA H100", "compute_capability": "9.0"}``."""
    cudart = load_cudart()
    count = cuda_call(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount (is an NVIDIA driver installed?)")
    if not 0 <= device < count:
        raise EngineError(f"CUDA device {device} does not exist; this machine has {count} GPU(s)")
    props = cuda_call(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    return {"name": _text(props.name), "compute_capability": f"{props.major}.{props.minor}"}


def current_environment(device: int = 0) -> dict[str, Any]:
    """What a plan must match to run here: TensorRT version and the GPU."""
    return {"tensorrt_version": import_tensorrt().__version__, "gpu": current_gpu(device)}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode(errors="replace")
    return str(value)


# -- the process-wide logger --------------------------------------------------------------------------------

# TensorRT severities are 0 INTERNAL_ERROR, 1 ERROR, 2 WARNING, 3 INFO, 4 VERBOSE.
_LEVELS = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.DEBUG, logging.DEBUG)


def trt_max_severity(level: int) -> int:
    """The most verbose TensorRT severity worth forwarding when msmlp's logger sits at ``level``.

    TensorRT's INFO is build chatter: forwarded only at DEBUG; VERBOSE only below DEBUG.
    """
    if level < logging.DEBUG:
        return 4
    if level <= logging.DEBUG:
        return 3
    return 2 if level <= logging.WARNING else 1


class LogForwarder:
    """The logic of the TensorRT logger: gate by severity first, then forward; collect errors per thread."""

    def __init__(self) -> None:
        self.max_severity = trt_max_severity(logger.getEffectiveLevel())
        self._local = threading.local()

    def refresh(self) -> None:
        """Follow msmlp's current level (called at each build and backend open)."""
        self.max_severity = trt_max_severity(logger.getEffectiveLevel())

    def forward(self, severity: int, msg: str) -> None:
        if severity > self.max_severity:  # before any formatting: most messages stop here
            return
        if severity <= 1:
            captured = getattr(self._local, "errors", None)
            if captured is not None:
                captured.append(msg)
        logger.log(_LEVELS[min(max(severity, 0), 4)], "tensorrt: %s", msg)

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Collect the errors TensorRT logs in this thread, to quote them in an exception."""
        previous = getattr(self._local, "errors", None)
        self._local.errors = errors = []
        try:
            yield errors
        finally:
            self._local.errors = previous


def errors_text(errors: list[str]) -> str:
    return " | ".join(errors[-5:]) or "TensorRT logged no error; rerun with -v for its log"


FORWARDER = LogForwarder()
_LOCK = threading.Lock()
_LOGGER: Any = None


def capture_errors() -> Any:
    """``with capture_errors() as errors:``: the TensorRT errors logged in this thread meanwhile."""
    return FORWARDER.capture()


def process_logger() -> Any:
    """The one ``trt.ILogger`` of this process (created once, never freed), shared with Polygraphy."""
    global _LOGGER
    trt = import_tensorrt()
    with _LOCK:
        if _LOGGER is None:

            class TrtLogger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, severity: Any, msg: str) -> None:
                    FORWARDER.forward(int(severity), msg)

            _LOGGER = TrtLogger()
            _share_with_polygraphy(_LOGGER)
    FORWARDER.refresh()
    return _LOGGER


def _share_with_polygraphy(trt_logger: Any) -> None:
    """Polygraphy's loaders create builders with ``get_trt_logger()``; make that ours, as TensorRT keeps one."""
    try:
        from polygraphy.backend.trt import util as pg_util
    except ImportError:
        return
    if getattr(pg_util, "TRT_LOGGER", None) is None:
        pg_util.TRT_LOGGER = trt_logger
    else:
        logger.debug("Polygraphy already created its TensorRT logger; TensorRT keeps the first one")


# -- plugins ---------------------------------------------------------------------------------------------


class PluginLibraries:
    """Plugin libraries loaded into a registry, each once per process, keyed by resolved path; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[str, Any] = {}
        self._registered: set[str] = set()

    def load(self, registry: Any, paths: Iterable[str | Path]) -> list[str]:
        """Load the libraries not loaded yet; return their resolved paths in order."""
        resolved = []
        with self._lock:
            for path in paths:
                key = str(Path(path).resolve())
                resolved.append(key)
                if key in self._handles:
                    continue
                if not Path(key).is_file():
                    raise InputError(f"plugin library {str(path)!r} does not exist")
                handle = registry.load_library(key)
                if handle is None:
                    raise EngineError(
                        f"TensorRT could not load the plugin library {key} (not a plugin library, or its "
                        "plugins are already registered by another loader, e.g. ctypes.CDLL)"
                    )
                self._handles[key] = handle
        return resolved

    def once(self, key: str, register: Any) -> None:
        """Run ``register()`` the first time ``key`` is seen (plugin creators register once)."""
        with self._lock:
            if key not in self._registered:
                register()
                self._registered.add(key)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._handles)


LIBRARIES = PluginLibraries()
SHIFT_PLUGIN_MODULE = "msmlp.plugins.trt_plugin"


def load_plugins(paths: Iterable[str | Path] = (), *, shift_plugins: bool = False) -> list[str]:
    """Register TensorRT's own plugins, the given libraries and (for a build) msmlp's shift plugins.

    Opening a plan never needs ``shift_plugins``: the plan holds the plugins' ahead-of-time kernels.
    """
    trt = import_tensorrt()
    LIBRARIES.once("nvinfer_plugins", lambda: trt.init_libnvinfer_plugins(process_logger(), ""))
    resolved = LIBRARIES.load(trt.get_plugin_registry(), paths)
    if shift_plugins:
        LIBRARIES.once(SHIFT_PLUGIN_MODULE, shift_plugin_registrar())
    return resolved


def shift_plugin_registrar() -> Any:
    """``register_trt_plugins`` of msmlp's shift plugins, imported only when asked for."""
    try:
        from msmlp.plugins.trt_plugin import register_trt_plugins
    except ImportError as exc:
        raise MissingDependencyError(
            f"shift_plugins needs {SHIFT_PLUGIN_MODULE} and its dependencies ({exc}); "
            f"install TensorRT with: {TRT_INSTALL}"
        ) from exc
    return register_trt_plugins


# -- dtypes ----------------------------------------------------------------------------------------------

_NUMPY = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "UINT8": "uint8", "INT32": "int32",
          "INT64": "int64", "BOOL": "bool"}  # fmt: skip
_EXTENDED = {"BF16": "bfloat16", "FP8": "float8_e4m3fn"}  # ml_dtypes / torch names (FP8 is E4M3)


def dtype_name(trt_dtype: Any) -> str:
    """``DataType.HALF`` -> ``"HALF"`` (works on the pybind enum and on plain strings)."""
    return str(getattr(trt_dtype, "name", trt_dtype)).rsplit(".", 1)[-1].upper()


def numpy_dtype(trt_dtype: Any) -> np.dtype:
    """The numpy dtype for a TensorRT tensor; BF16/FP8 through ml_dtypes; INT4/FP4 are refused."""
    name = dtype_name(trt_dtype)
    if name in _NUMPY:
        return np.dtype(_NUMPY[name])
    if name in _EXTENDED:
        try:
            import ml_dtypes
        except ImportError as exc:
            raise MissingDependencyError(
                f"the engine has {name} tensors; numpy needs ml_dtypes for them: pip install ml_dtypes"
            ) from exc
        return np.dtype(getattr(ml_dtypes, _EXTENDED[name]))
    raise EngineError(
        f"the engine has a tensor of TensorRT type {name}, which msmlp cannot feed or read; "
        "export with FP32/FP16 inputs and outputs (AutoCast keep_io_types)"
    )


def torch_dtype(trt_dtype: Any) -> Any:
    """The torch dtype for a TensorRT tensor; packed INT4/FP4 are refused."""
    import torch

    name = dtype_name(trt_dtype)
    found = _NUMPY.get(name) or _EXTENDED.get(name)
    if found is None or not hasattr(torch, found):
        raise EngineError(f"the engine has a tensor of TensorRT type {name}, which torch cannot hold")
    return getattr(torch, found)


def check_aligned(name: str, address: int) -> None:
    """TensorRT needs 256-byte aligned tensor addresses; a sliced torch view may not be."""
    if int(address) % ALIGNMENT:
        raise InputError(
            f"tensor {name!r} at address {int(address):#x} is not {ALIGNMENT}-byte aligned, as TensorRT "
            "requires (a view into a larger tensor?); pass tensor.contiguous().clone()"
        )


# -- the plan check ----------------------------------------------------------------------------------------


def read_checked_plan(
    plan_path: Path, expected: dict | None = None, *, current: dict | None = None, device: int = 0
) -> tuple[bytes, dict]:
    """Read the plan once, check those bytes, return them for deserialization (no check-then-use gap)."""
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise InputError(
            f"engine file {str(plan_path)!r} does not exist; build one with: msmlp build MODEL.onnx"
        )
    data = plan_path.read_bytes()
    return data, check_plan_metadata(plan_path, expected, current=current, device=device, plan_bytes=data)


def check_plan_metadata(
    plan_path: Path,
    expected: dict | None = None,
    *,
    current: dict | None = None,
    device: int = 0,
    plan_bytes: bytes | None = None,
) -> dict:
    """Refuse a plan before deserializing it: missing sidecar, changed bytes, other TensorRT or GPU, other model.

    ``expected``: fields the caller needs (e.g. ``{"model": "s2mlpv2_small"}``). ``current``: the machine,
    looked up only after the file checks when ``None``, so a bad plan is refused even where TensorRT is absent.
    ``plan_bytes``: the bytes that will be deserialized (hashed instead of the file).
    """
    plan_path = Path(plan_path)
    if plan_bytes is None and not plan_path.is_file():
        raise InputError(
            f"engine file {str(plan_path)!r} does not exist; build one with: msmlp build MODEL.onnx"
        )
    meta = read_plan_sidecar(plan_path)
    digest = hashlib.sha256(plan_bytes).hexdigest() if plan_bytes is not None else file_sha256(plan_path)
    if digest != meta.get("plan_sha256"):
        raise EngineError(
            f"{plan_path} does not match its metadata (sha256 {digest[:12]}..., recorded "
            f"{str(meta.get('plan_sha256'))[:12]}...): the file was modified or is corrupt; rebuild it"
        )
    for key, want in (expected or {}).items():
        if want is not None and meta.get(key) != want:
            raise EngineError(f"{plan_path} was built for {key} {meta.get(key)!r}, expected {want!r}")
    here = current if current is not None else current_environment(device)
    built_trt, have_trt = meta.get("tensorrt_version"), here.get("tensorrt_version")
    if built_trt != have_trt:
        raise EngineError(
            f"{plan_path} was built with TensorRT {built_trt}, this machine has {have_trt}; "
            "plans only load on the version that built them: rebuild with msmlp build"
        )
    built_gpu, have_gpu = meta.get("gpu") or {}, here.get("gpu") or {}
    if built_gpu.get("compute_capability") != have_gpu.get("compute_capability"):
        raise EngineError(
            f"{plan_path} was built for compute capability {built_gpu.get('compute_capability')} "
            f"({built_gpu.get('name')}), this GPU is {have_gpu.get('compute_capability')} "
            f"({have_gpu.get('name')}); rebuild the engine on this machine"
        )
    if built_gpu.get("name") != have_gpu.get("name"):
        logger.warning(
            "%s was built on %s and runs on %s (same architecture); timings may differ",
            plan_path,
            built_gpu.get("name"),
            have_gpu.get("name"),
        )
    return meta
