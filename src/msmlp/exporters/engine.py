"""TensorRT engine build from an ONNX graph, through Polygraphy's loaders, with the plan's metadata sidecar.

The network is strongly typed: precision comes from the graph (FP16 casts from AutoCast, INT8 Q/DQ from
ModelOpt), never from builder flags, which TensorRT 11 removed; 10.x accepts the ``STRONGLY_TYPED`` flag too.
Polygraphy parses the graph (``NetworkFromOnnxPath``), configures the builder (``CreateConfig``: profile,
workspace, optimisation level, TF32) and builds (``EngineBytesFromNetwork``). What it lacks is kept here:
the sidecar ``<plan>.json`` written through :mod:`msmlp.artifacts` (model, precision, I/O, deploy config,
TensorRT version, GPU, hashes) that the runtime checks before deserializing; a strict timing-cache policy
(a cache from another TensorRT or GPU is an error, the updated cache is written atomically); a check that
the profile was accepted; plugin registration once per process; and parser errors quoted in the exception.
Polygraphy makes plans with DETAILED profiling verbosity when none is given (every layer's parameters in the
plan, readable by anyone holding it); msmlp asks for LAYER_NAMES_ONLY unless detailed layers are wanted.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmlp.artifacts import read_artifact, write_plan_sidecar
from msmlp.errors import ExportError, InputError, MissingDependencyError
from msmlp.exporters.trt_common import (
    TRT_INSTALL,
    capture_errors,
    current_gpu,
    errors_text,
    import_tensorrt,
    load_plugins,
    process_logger,
    set_device,
    tensorrt_available,
)
from msmlp.features import SizeProfile
from msmlp.fileio import file_sha256, write_bytes_atomic
from msmlp.log import logger

if TYPE_CHECKING:  # never imported at run time; lets shared/tools/trt_api_names.py check this file
    import tensorrt as trt  # noqa: F401

__all__ = ["DEFAULT_BATCH", "OPT_LEVELS", "build_engine", "check_build_args", "tensorrt_available"]

OPT_LEVELS = range(0, 6)
DEFAULT_BATCH = (1, 8, 64)


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
    shift_plugins: bool = False,
    device: int = 0,
    detailed_layers: bool = False,
) -> dict:
    """Build a TensorRT plan from ``onnx_path``; write it and its sidecar atomically; return the metadata.

    ``batch`` is the optimisation profile (min, opt, max); ``input_shape`` the per-image shape (C,H,W),
    or the full shape with the batch as -1. ``metadata`` (model, precision, config...) goes into the sidecar.
    ``tf32`` lets FP32 GEMMs and convolutions use TF32 tensor cores; it is off by default because TF32
    keeps 10 mantissa bits and an FP32 engine would then miss the FP32 parity tolerance.
    ``shift_plugins`` registers msmlp's TensorRT shift plugins before parsing (graphs exported with them).
    ``detailed_layers`` embeds each layer's details in the plan (for profiling, e.g. with the engine
    inspector); by default the plan carries the layer names only.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    info = read_artifact(onnx_path) if onnx_path.is_file() else None  # missing: check_build_args says so
    sizes = info.features.profile if info is not None and info.features is not None else None
    sample = check_build_args(
        onnx_path, batch, input_shape, workspace_gib, opt_level, plugins, sizes is not None
    )
    assert info is not None
    ok, reason = tensorrt_available(device)
    if not ok:
        raise MissingDependencyError(f"cannot build a TensorRT engine: {reason}")
    trt = import_tensorrt()
    shapes = profile_shapes(batch, sample, sizes)
    set_device(device)
    start = time.perf_counter()
    libraries = load_plugins(plugins, shift_plugins=shift_plugins)
    verbosity = profiling_verbosity(trt, detailed_layers)
    plan = _build_plan(onnx_path, input_name, shapes, workspace_gib, opt_level, timing_cache, tf32, verbosity)
    seconds = time.perf_counter() - start
    plugin_ptx = _plugin_ptx() if shift_plugins else {}
    meta = {
        "model": info.model,
        "precision": info.precision,
        "config": info.config.to_dict() if info.config else None,
        **(metadata or {}),
        "inputs": [
            {**t.to_dict(), "shape": [-1, *(d if d > 0 else -1 for d in sample)]}
            if t.name == input_name
            else t.to_dict()
            for t in info.inputs
        ],
        "outputs": [t.to_dict() for t in info.outputs],
        "tensorrt_version": trt.__version__,
        "gpu": current_gpu(device),
        "profile": {"input": input_name, **{k: list(s) for k, s in zip(("min", "opt", "max"), shapes)}},
        "tf32": tf32,
        "profiling_verbosity": verbosity.name,
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "plugins": libraries,
        "shift_plugins": shift_plugins,
        "plugin_ptx": plugin_ptx,  # a driver that JIT-compiles the embedded PTX must support its ISA
        "workspace_gib": workspace_gib,
        "opt_level": opt_level,
        "build_seconds": round(seconds, 1),
    }
    meta = json.loads(json.dumps(meta, default=str))  # returned as it reads back (lists, not tuples)
    _write(plan_path, plan)
    meta = write_plan_sidecar(plan_path, meta, plan)
    logger.info("engine: %s (%.1f MB) built in %.0f s", plan_path, len(plan) / 1e6, seconds)
    return meta


def _build_plan(
    onnx_path: Path,
    input_name: str,
    shapes: list[tuple[int, ...]],
    workspace_gib: float,
    opt_level: int,
    timing_cache: Path | None,
    tf32: bool,
    verbosity: Any,
) -> bytes:
    """Parse into a strongly typed network and build, through Polygraphy; save the timing cache."""
    trt = import_tensorrt()
    pg = _polygraphy()
    process_logger()  # before Polygraphy's first builder: TensorRT keeps the first logger it is given
    configs: list[Any] = []

    def create_config(builder: Any, network: Any) -> Any:
        config = pg.CreateConfig(
            profiles=[pg.Profile().add(input_name, *shapes)],
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_gib * (1 << 30))},
            builder_optimization_level=opt_level,
            tf32=tf32,
            profiling_verbosity=verbosity,
        )(builder, network)
        # Polygraphy ignores add_optimization_profile's return (-1 on failure); count what was added.
        if config.num_optimization_profiles != 1:
            raise ExportError(f"TensorRT rejected the optimisation profile {shapes} for input {input_name!r}")
        _attach_timing_cache(config, timing_cache)
        configs.append(config)
        return config

    with capture_errors() as trt_errors, polygraphy_logging() as pg_errors:
        try:
            builder, network, parser = pg.NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)()
        except pg.PolygraphyException:
            detail = "; ".join(pg_errors + trt_errors) or "no error details"
            raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: {detail}") from None
        check_network_inputs([network.get_input(i).name for i in range(network.num_inputs)], input_name)
        try:
            plan = pg.EngineBytesFromNetwork((builder, network, parser), config=create_config)()
        except pg.PolygraphyException:
            raise ExportError(
                f"TensorRT could not build an engine from {onnx_path}: {errors_text(trt_errors or pg_errors)}"
            ) from None
    if timing_cache is not None and configs:  # the builder added this build's timings to the cache
        _write(Path(timing_cache), bytes(configs[0].get_timing_cache().serialize()))
    return bytes(plan)


def _plugin_ptx() -> dict[str, dict[str, str]]:
    """The PTX ISA and target of the shift-plugin kernels this process compiled (during the build)."""
    from msmlp.plugins.trt_plugin import compiled_ptx

    return compiled_ptx()


def profiling_verbosity(trt: Any, detailed: bool) -> Any:
    """``trt.ProfilingVerbosity``: layer names only, or everything when asked for (never left to Polygraphy)."""
    return trt.ProfilingVerbosity.DETAILED if detailed else trt.ProfilingVerbosity.LAYER_NAMES_ONLY


class _Polygraphy:
    """The few Polygraphy names the build uses, imported on demand."""

    def __init__(self) -> None:
        from polygraphy.backend.trt import (
            CreateConfig,
            EngineBytesFromNetwork,
            NetworkFromOnnxPath,
            Profile,
        )
        from polygraphy.exception import PolygraphyException

        self.CreateConfig, self.EngineBytesFromNetwork = CreateConfig, EngineBytesFromNetwork
        self.NetworkFromOnnxPath, self.Profile = NetworkFromOnnxPath, Profile
        self.PolygraphyException = PolygraphyException


def _polygraphy() -> _Polygraphy:
    try:
        return _Polygraphy()
    except ImportError as exc:
        raise MissingDependencyError(
            f"building engines needs Polygraphy ({exc}); install it with: pip install polygraphy ({TRT_INSTALL})"
        ) from exc


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextmanager
def polygraphy_logging() -> Iterator[list[str]]:
    """Send Polygraphy's messages (printed to stdout by default) to ``msmlp.polygraphy``; collect its errors.

    Only for the duration of a build, so a caller's own Polygraphy settings are left as they were.
    """
    from polygraphy.logger import G_LOGGER

    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(_ANSI.sub("", record.getMessage()).removeprefix("[E] ").removeprefix("[!] "))

    target = logging.getLogger("msmlp.polygraphy")
    handler = Collect(logging.ERROR)
    saved = (G_LOGGER.use_python_logging_system, getattr(G_LOGGER, "python_logger", None), G_LOGGER.colors)
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.python_logger, G_LOGGER.colors = target, False
    target.addHandler(handler)
    try:
        with G_LOGGER.verbosity(G_LOGGER.INFO if logger.isEnabledFor(logging.DEBUG) else G_LOGGER.WARNING):
            yield errors
    finally:
        target.removeHandler(handler)
        G_LOGGER.use_python_logging_system = saved[0]
        G_LOGGER.colors = saved[2]
        if saved[1] is not None:
            G_LOGGER.python_logger = saved[1]


def check_network_inputs(names: list[str], input_name: str) -> None:
    if names != [input_name]:
        raise ExportError(f"the ONNX graph's inputs are {names}; expected exactly [{input_name!r}]")


def profile_shapes(
    batch: tuple[int, int, int], sample: tuple[int, ...], sizes: SizeProfile | None = None
) -> list[tuple[int, ...]]:
    """The optimisation profile's min/opt/max input shapes: the batch profile on the per-image C,H,W, and
    for a feature graph with dynamic H/W its size profile's min/opt/max H and W."""
    if sizes is None:
        if any(d < 1 for d in sample):
            raise InputError(f"input shape {sample} has dynamic sizes but the graph records no size profile")
        return [(b, *sample) for b in batch]
    return [(b, sample[0], *hw) for b, hw in zip(batch, (sizes.min, sizes.opt, sizes.max))]


def check_build_args(
    onnx_path: Path,
    batch: tuple[int, int, int],
    input_shape: tuple[int, ...],
    workspace_gib: float,
    opt_level: int,
    plugins: Sequence[Path] = (),
    dynamic_spatial: bool = False,
) -> tuple[int, ...]:
    """Validate the build options before TensorRT is touched; return the per-image input shape (H, W may
    be -1 with ``dynamic_spatial``: a feature graph whose size profile gives them)."""
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
    fixed = shape[:1] if dynamic_spatial else shape
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in fixed):
        raise InputError(f"input shape {tuple(input_shape)} must be C,H,W (or -1,C,H,W) with positive sizes")
    if not workspace_gib > 0:
        raise InputError(f"workspace {workspace_gib!r} GiB must be positive")
    if opt_level not in OPT_LEVELS:
        raise InputError(f"builder optimisation level {opt_level!r} must be one of 0..5 (3 is the default)")
    for p in plugins:
        if not Path(p).is_file():
            raise InputError(f"plugin library {str(p)!r} does not exist")
    return shape


def _attach_timing_cache(config: Any, path: Path | None) -> None:
    """Start from the saved timing cache when there is one: rebuilds then skip most tactic timing.

    Polygraphy falls back to an empty cache when a saved one does not fit; we refuse, so a stale cache
    (another TensorRT version or GPU) is noticed instead of silently re-timing every build.
    """
    data = b""
    if path is not None and Path(path).is_file():
        data = Path(path).read_bytes()
        logger.info("engine: reusing timing cache %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(f"timing cache {path} is unusable (another TensorRT version or GPU?); delete it")


def _write(path: Path, data: bytes) -> None:
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc}") from exc
