"""TensorRT engine build from an ONNX graph, and the plan metadata that guards deserialization.

The network is strongly typed: precision comes from the graph (FP16 casts from AutoCast, INT8 Q/DQ from
ModelOpt), never from builder flags, which TensorRT 11 removed; the same code builds on 10.x, which
accepts the ``STRONGLY_TYPED`` flag. Every ONNX parser error is reported, not only the first.

A plan only runs on the TensorRT version and GPU architecture that built it, and NVIDIA warns never to
deserialize an untrusted one. So each plan gets a sidecar ``<plan>.json`` (model, precision, TensorRT
version, GPU name and compute capability, profile, SHA-256 of the ONNX and of the plan), and
:func:`check_plan_metadata` refuses a missing, modified or mismatched plan before TensorRT sees it.
TensorRT and CUDA are imported only inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msmlp.errors import EngineError, ExportError, InputError, MissingDependencyError
from msmlp.fileio import write_bytes_atomic
from msmlp.log import logger

TRT_INSTALL = "pip install 'msmlp[tensorrt]' (TensorRT and cuda-python; needs an NVIDIA GPU and driver)"
METADATA_FORMAT = "msmlp-plan/1"
OPT_LEVELS = range(0, 6)
DEFAULT_BATCH = (1, 8, 64)


# -- availability and the current machine --------------------------------------------------------------


def tensorrt_available() -> tuple[bool, str]:
    """Whether an engine can be built here, and why not (with the install command) if it cannot."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return False, f"TensorRT is not installed ({exc}); install it with: {TRT_INSTALL}"
    except Exception as exc:  # the bindings without the TensorRT library raise OSError and friends
        return (
            False,
            f"TensorRT is installed but cannot be loaded ({type(exc).__name__}: {exc}); {TRT_INSTALL}",
        )
    try:
        gpu = current_gpu()
    except MissingDependencyError as exc:
        return False, str(exc)
    except EngineError as exc:
        return False, f"TensorRT {trt.__version__} is installed but {exc}"
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
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when the bindings lack the library
        raise MissingDependencyError(
            f"TensorRT engines need TensorRT ({exc}); install it with: {TRT_INSTALL}"
        ) from exc
    return {"tensorrt_version": trt.__version__, "gpu": current_gpu(device)}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode(errors="replace")
    return str(value)


# -- build ---------------------------------------------------------------------------------------------


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    *,
    batch: tuple[int, int, int],
    input_name: str,
    input_shape: tuple[int, ...],
    workspace_gib: float = 4.0,
    opt_level: int = 3,
    timing_cache: Path | None = None,
    plugins: Sequence[Path] = (),
    metadata: dict | None = None,
    tf32: bool = False,
) -> dict:
    """Build a TensorRT plan from ``onnx_path``; write it and its sidecar atomically; return the metadata.

    ``batch`` is the optimisation profile (min, opt, max); ``input_shape`` the per-image shape (C,H,W),
    or the full shape with the batch as -1. ``metadata`` (model, precision, ...) goes into the sidecar.
    ``tf32`` lets FP32 GEMMs and convolutions use TF32 tensor cores; it is off by default because TF32
    keeps 10 mantissa bits and an FP32 engine would then miss the FP32 parity tolerance.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    sample = check_build_args(onnx_path, batch, input_shape, workspace_gib, opt_level, plugins)
    ok, reason = tensorrt_available()
    if not ok:
        raise MissingDependencyError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    shapes = [(b, *sample) for b in batch]
    start = time.perf_counter()
    plan = _build_plan(
        trt, onnx_path, input_name, shapes, workspace_gib, opt_level, timing_cache, plugins, tf32
    )
    seconds = time.perf_counter() - start
    _write_atomic(plan_path, plan)
    meta = {
        **(metadata or {}),
        "tensorrt_version": trt.__version__,
        "gpu": current_gpu(),
        "profile": {
            "input": input_name,
            "min": list(shapes[0]),
            "opt": list(shapes[1]),
            "max": list(shapes[2]),
        },
        "tf32": tf32,
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "plugins": [str(Path(p).resolve()) for p in plugins],
        "workspace_gib": workspace_gib,
        "opt_level": opt_level,
        "build_seconds": round(seconds, 1),
    }
    meta = write_plan_metadata(plan_path, meta)
    logger.info("engine: %s (%.1f MB) built in %.0f s", plan_path, plan_path.stat().st_size / 1e6, seconds)
    return meta


def _build_plan(
    trt: Any,
    onnx_path: Path,
    input_name: str,
    shapes: list[tuple[int, ...]],
    workspace_gib: float,
    opt_level: int,
    timing_cache: Path | None,
    plugins: Sequence[Path],
    tf32: bool = False,
) -> bytes:
    """Parse into a strongly typed network, configure the builder, build; save the timing cache."""
    log = trt_logger(trt)
    load_plugins(trt, log, plugins)
    builder = trt.Builder(log)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, log)
    _parse(parser, onnx_path)
    _check_network_input(network, input_name, len(shapes[0]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.builder_optimization_level = opt_level
    if not tf32:  # TF32 is on by default in TensorRT; FP32 tensors then lose 13 mantissa bits in GEMMs
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes[0], shapes[1], shapes[2])
    config.add_optimization_profile(profile)
    _attach_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path}: {log.errors_text()}")
    if timing_cache is not None:  # the builder added this build's timings to the cache it was given
        _write_atomic(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def describe_onnx(onnx_path: Path) -> dict[str, Any]:
    """What a build needs to know about a graph: input name and per-image shape, the model name and
    batch profile recorded at export (``msmlp.*`` metadata), and its precision (Q/DQ, FP16 or FP32)."""
    from msmlp.export.precision import load_graph
    from msmlp.runtime.ort import graph_precision

    path = Path(onnx_path)
    graph = load_graph(path)
    value = graph.graph.input[0]
    dims = [d.dim_value or -1 for d in value.type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims[1:]) < 1:
        raise InputError(
            f"input {value.name!r} of {path} has shape {dims}; expected N,C,H,W with fixed C,H,W"
        )
    props = {p.key: p.value for p in graph.metadata_props}
    batch = DEFAULT_BATCH
    if "msmlp.batch" in props:
        try:
            lo, opt, hi = (int(v) for v in props["msmlp.batch"].split(","))
            batch = (lo, opt, hi)
        except ValueError:
            logger.warning("ignoring unreadable msmlp.batch %r in %s", props["msmlp.batch"], path)
    return {
        "input_name": value.name,
        "input_shape": tuple(dims[1:]),
        "model": props.get("msmlp.model"),
        "batch": batch,
        "precision": graph_precision(path),
    }


def check_build_args(
    onnx_path: Path,
    batch: tuple[int, int, int],
    input_shape: tuple[int, ...],
    workspace_gib: float,
    opt_level: int,
    plugins: Sequence[Path] = (),
) -> tuple[int, ...]:
    """Validate the build options before TensorRT is touched; return the per-image input shape."""
    if not Path(onnx_path).is_file():
        raise InputError(f"ONNX file {str(onnx_path)!r} does not exist; export one first (msmlp-export)")
    if (
        len(batch) != 3
        or not all(isinstance(b, int) and b >= 1 for b in batch)
        or not (batch[0] <= batch[1] <= batch[2])
    ):
        raise InputError(f"batch profile {tuple(batch)} must be three integers MIN <= OPT <= MAX, all >= 1")
    shape = tuple(input_shape)
    if len(shape) == 4 and shape[0] in (-1, 0, None):
        shape = shape[1:]
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise InputError(f"input shape {tuple(input_shape)} must be C,H,W (or -1,C,H,W) with positive sizes")
    if not workspace_gib > 0:
        raise InputError(f"workspace {workspace_gib!r} GiB must be positive")
    if opt_level not in OPT_LEVELS:
        raise InputError(f"builder optimisation level {opt_level!r} must be one of 0..5 (3 is the default)")
    for p in plugins:
        if not Path(p).is_file():
            raise InputError(f"plugin library {str(p)!r} does not exist")
    return shape


def _parse(parser: Any, onnx_path: Path) -> None:
    """Parse from the file (so external weights next to it are found); report every parser error."""
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = (
            f"node {err.node()} ({err.node_name()}, {err.node_operator()})" if err.node() >= 0 else "graph"
        )
        errors.append(f"[{i + 1}] {where}: {err.desc()}")
    detail = "; ".join(errors) or "no error details"
    raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path} with {len(errors)} error(s): {detail}")


def _check_network_input(network: Any, input_name: str, rank: int) -> None:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [input_name]:
        raise ExportError(f"the ONNX graph's inputs are {names}; expected exactly [{input_name!r}]")
    got = len(network.get_input(0).shape)
    if got != rank:
        raise ExportError(f"input {input_name!r} has rank {got}; expected {rank} (N,C,H,W)")


def _attach_timing_cache(config: Any, path: Path | None) -> None:
    """Start from the saved timing cache when there is one: rebuilds then skip most tactic timing."""
    data = b""
    if path is not None and Path(path).is_file():
        data = Path(path).read_bytes()
        logger.info("engine: reusing timing cache %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(f"timing cache {path} is unusable (another TensorRT version or GPU?); delete it")


def load_plugins(trt: Any, log: Any, plugins: Sequence[Path | str]) -> None:
    """Register TensorRT's own plugins and the given plugin libraries (needed to build and to load)."""
    trt.init_libnvinfer_plugins(log, "")
    registry = trt.get_plugin_registry()
    for path in plugins:
        if not Path(path).is_file() or registry.load_library(str(path)) is None:
            raise EngineError(f"TensorRT could not load the plugin library {path}")


def trt_logger(trt: Any) -> Any:
    """A TensorRT logger that routes messages to msmlp's and keeps errors for exception messages."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                logger.error("tensorrt: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                logger.warning("tensorrt: %s", msg)
            else:
                logger.debug("tensorrt: %s", msg)

        def errors_text(self) -> str:
            return " | ".join(self.errors[-5:]) or "TensorRT logged no error; rerun with -v for its log"

    return Logger()


# -- plan files and their metadata ----------------------------------------------------------------------


def sidecar_path(plan_path: Path) -> Path:
    return Path(plan_path).with_name(Path(plan_path).name + ".json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_plan_metadata(plan_path: Path, metadata: dict) -> dict:
    """Write ``<plan>.json`` for an existing plan, with the plan's hash; return what was written."""
    meta = {
        "format": METADATA_FORMAT,
        **metadata,
        "plan": Path(plan_path).name,
        "plan_sha256": file_sha256(plan_path),
        "plan_bytes": Path(plan_path).stat().st_size,
    }
    _write_atomic(sidecar_path(plan_path), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def check_plan_metadata(
    plan_path: Path, expected: dict | None = None, *, current: dict | None = None, device: int = 0
) -> dict:
    """Refuse a plan before deserializing it: missing sidecar, changed bytes, other TensorRT or GPU, other model.

    ``expected``: fields the caller needs (e.g. ``{"model": "s2mlpv2_small"}``). ``current``: the
    machine (:func:`current_environment` of ``device``), looked up only after the file checks when
    ``None``, so a missing or modified plan is refused even where TensorRT is absent.
    """
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise InputError(
            f"engine file {str(plan_path)!r} does not exist; build one with: msmlp build MODEL.onnx"
        )
    meta = read_plan_metadata(plan_path)
    digest = file_sha256(plan_path)
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


def read_plan_metadata(plan_path: Path) -> dict:
    side = sidecar_path(plan_path)
    if not side.is_file():
        raise EngineError(
            f"{plan_path} has no metadata file {side.name}; msmlp only loads plans it built "
            "(never deserialize an engine from an untrusted source): rebuild with msmlp build"
        )
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"metadata {side} is unreadable ({exc}); rebuild the engine") from None
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        raise EngineError(f"metadata {side} is not an msmlp plan description ({METADATA_FORMAT}); rebuild")
    return meta


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc}") from exc
