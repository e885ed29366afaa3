"""OpenVINO on the CPU behind the backend protocol: the exported ONNX graphs (FP32 and INT8 Q/DQ) read
directly, at the speed the CPU's BF16/INT8 units allow.

Why OpenVINO: with the ``bf16`` inference-precision hint it runs the same graph several times faster
than ONNX Runtime's FP32 path on a BF16-capable CPU (measured: see docs/performance.md).
The hint is explicit on purpose: on a BF16-capable CPU OpenVINO *defaults* to bf16, which would
silently lower the precision of a graph verified in FP32, so ``inference_precision=None`` asks for f32.
Compiled models are cached (``CACHE_DIR``), so a second start of the same file skips compilation.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.artifacts import UNBOUNDED, ArtifactInfo, read_artifact
from msmlp.errors import EngineError, InputError, require
from msmlp.hostcpu import GROUPS, host_cpu
from msmlp.log import logger
from msmlp.runtime.base import Backend, BackendInfo
from msmlp.runtime.registry import BackendSpec, Candidate, Probe, Request, Rows, Sources, Verification

INSTALL = "pip install openvino"
HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
PERFORMANCE_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
COMPUTE_LAYERS = ("FullyConnected", "Convolution", "MatMul", "GroupConvolution")
_PRECISION_NAMES = {"bf16": "bf16", "f32": "fp32", "i8": "int8", "u8": "int8", "f16": "fp16"}


def openvino_module() -> Any:
    """``openvino``, or one clear error naming the install command."""
    return require("openvino", "the OpenVINO backend", INSTALL)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/msmlp/openvino`` (``~/.cache/...``): never inside an export folder, whose
    contents the manifest describes."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "msmlp" / "openvino"


def bf16_support(core: Any = None) -> tuple[bool, str]:
    """Whether the CPU computes BF16 natively (AMX or AVX-512 BF16), and why not when it does not.

    Both the CPU flags (:func:`msmlp.hostcpu.host_cpu`, which ``MSMLP_CPU_MASK`` can hide them from)
    and OpenVINO's ``OPTIMIZATION_CAPABILITIES`` must agree: OpenVINO can list BF16 where it would only
    emulate it, which is slower than FP32.
    """
    cpu = host_cpu()
    if cpu.lacks("bf16"):
        return False, (
            "the CPU has neither AMX (amx_bf16) nor AVX-512 BF16 (avx512_bf16)" + cpu.mask_note("bf16")
        )
    core = core or openvino_module().Core()
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" not in capabilities:
        return False, f"OpenVINO lists no BF16 among the CPU's capabilities ({', '.join(capabilities)})"
    native = sorted(cpu.flags & set(GROUPS["bf16"]))
    return True, "native BF16: " + (", ".join(native) or "OpenVINO capability BF16")


class OpenVINOBackend(Backend):
    """An exported ONNX graph on OpenVINO's CPU plugin.

    ``inference_precision``: ``None``/``"f32"`` (exact) or ``"bf16"`` (needs AMX or AVX-512 BF16; an
    INT8 Q/DQ graph then keeps its non-quantized ops in bf16). ``threads``: ``INFERENCE_NUM_THREADS``
    (None: all cores). ``performance_hint``: ``latency`` (one stream) or ``throughput`` (several
    streams; concurrent callers each get their own infer request). ``cache_dir``: compiled-model cache
    (None: :func:`default_cache_dir`; ``False``: no cache). ``pin_threads``: OpenVINO's
    ``ENABLE_CPU_PINNING``, off by default: on shared cores pinned threads cannot move away from a busy
    neighbour (measured: see docs/performance.md). ``artifact``: the file's description when
    the caller already has it (a staged file before its manifest exists).
    """

    name = "openvino"

    def __init__(
        self,
        path: str | Path,
        *,
        inference_precision: str | None = None,
        threads: int | None = None,
        performance_hint: str = "latency",
        cache_dir: str | Path | bool | None = None,
        pin_threads: bool = False,
        artifact: ArtifactInfo | None = None,
    ) -> None:
        super().__init__()
        hint = HINTS.get(inference_precision or "f32")
        if hint is None:
            raise InputError(
                f"OpenVINO inference precision {inference_precision!r} is not one of f32, bf16 (or None)"
            )
        if performance_hint not in PERFORMANCE_HINTS:
            raise InputError(
                f"performance hint {performance_hint!r} is not one of {', '.join(PERFORMANCE_HINTS)}"
            )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None (all cores), got {threads!r}")
        self.path = Path(path)
        self.hint = hint
        self.threads = threads
        self.performance_hint = performance_hint
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.pin_threads = pin_threads
        self._artifact = artifact
        self._compiled: Any = None
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------------------
    def config(self, *, perf_count: bool = False) -> dict[str, Any]:
        """The compile options: precision hint, threads, performance hint, cache, profiling."""
        found: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.hint,
            "PERFORMANCE_HINT": PERFORMANCE_HINTS[self.performance_hint],
            "ENABLE_CPU_PINNING": self.pin_threads,
        }
        if self.threads is not None:
            found["INFERENCE_NUM_THREADS"] = self.threads
        if self.cache_dir is not None:
            found["CACHE_DIR"] = str(self.cache_dir)
        if perf_count:
            found["PERF_COUNT"] = True
        return found

    def _load(self) -> BackendInfo:
        ov = openvino_module()
        artifact = self._artifact or read_artifact(self.path)
        if artifact.kind != "onnx":
            raise InputError(f"OpenVINO runs ONNX graphs; {self.path.name} is a {artifact.kind}")
        core = ov.Core()
        if self.hint == "bf16":
            ok, why = bf16_support(core)
            if not ok:
                raise EngineError(
                    f"--precision bf16 on OpenVINO needs native BF16 but {why}; use --precision f32"
                )
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._compiled = self._compile(core, artifact, self.config())
        inputs, outputs = self._compiled.inputs, self._compiled.outputs
        if len(inputs) != 1 or not outputs:
            raise EngineError(
                f"{self.path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                "expected one image input and a logits output"
            )
        requests = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        for _ in range(max(1, requests)):
            self._requests.put(self._compiled.create_infer_request())
        shape = inputs[0].get_partial_shape()
        executed = execution_precisions(self._compiled)
        return BackendInfo.of_artifact(
            artifact,
            backend=self.name,
            precision=self._precision(artifact),
            input_name=inputs[0].any_name,
            input_shape=tuple(-1 if i == 0 or d.is_dynamic else d.get_length() for i, d in enumerate(shape)),
            output_name=outputs[0].any_name,
            details={
                "inference_precision_hint": self.hint,
                "threads": self.threads,
                "openvino_threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")),
                "performance_hint": self.performance_hint,
                "pin_threads": self.pin_threads,
                "streams": int(self._compiled.get_property("NUM_STREAMS")),
                "infer_requests": max(1, requests),
                "execution_precision": executed,
                "cache_dir": str(self.cache_dir) if self.cache_dir else None,
                "openvino": ov.get_version().split("-")[0],
            },
        )

    def _compile(self, core: Any, artifact: ArtifactInfo, config: Mapping[str, Any]) -> Any:
        """Read the ONNX file, bound the batch axis to the artefact's profile, compile for the CPU."""
        ov = openvino_module()
        try:
            model = core.read_model(str(self.path))
            lo, hi = artifact.batch_range
            dims = list(model.inputs[0].get_partial_shape()) if len(model.inputs) == 1 else []
            if dims:
                dims[0] = ov.Dimension(-1) if hi >= UNBOUNDED else ov.Dimension(lo, hi)
                profile = artifact.features.profile if artifact.features else None
                if profile is not None and len(dims) == 4:  # H, W within the feature export's size profile
                    dims[2] = ov.Dimension(profile.min[0], profile.max[0])
                    dims[3] = ov.Dimension(profile.min[1], profile.max[1])
                model.reshape({model.inputs[0]: ov.PartialShape(dims)})
            return core.compile_model(model, "CPU", dict(config))
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable/unsupported graphs
            logger.debug("OpenVINO could not compile %s", self.path, exc_info=True)
            raise EngineError(
                f"OpenVINO cannot load {str(self.path)!r}: {_first_line(exc)}; re-export it with msmlp-export"
            ) from exc

    def _precision(self, artifact: ArtifactInfo) -> str:
        if artifact.precision == "int8":
            return "int8"
        return "bf16" if self.hint == "bf16" else artifact.precision

    # -- running ------------------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        info = self.info
        request = self._requests.get()  # one request per caller: concurrent callers never share one
        try:
            request.infer({0: feed[info.input_name]})
            out = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        except RuntimeError as exc:
            logger.debug("OpenVINO failure", exc_info=True)
            raise EngineError(f"OpenVINO failed on {self.path.name}: {_first_line(exc)}") from exc
        finally:
            self._requests.put(request)
        return {info.output_name: out}

    def _infer_outputs(self, feed: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        index = {name: i for i, port in enumerate(self._compiled.outputs) for name in port.get_names()}
        found = [n for n in names if n in index]
        if len(found) < len(names):
            logger.debug("openvino: %d asked-for tensors are not separate outputs", len(names) - len(found))
        request = self._requests.get()
        try:
            request.infer({0: feed[self.info.input_name]})
            return {n: np.array(request.get_output_tensor(index[n]).data, copy=True) for n in found}
        except RuntimeError as exc:
            logger.debug("OpenVINO failure", exc_info=True)
            raise EngineError(f"OpenVINO failed on {self.path.name}: {_first_line(exc)}") from exc
        finally:
            self._requests.put(request)

    def _close(self) -> None:
        while not self._requests.empty():
            self._requests.get_nowait()
        self._compiled = None

    # -- profiling ----------------------------------------------------------------------------------
    def profile_layers(self, x: np.ndarray, *, runs: int = 10, top: int = 15) -> dict[str, Any]:
        """The performance counters ranked, op types labelled with the precision their kernels ran in
        (``FullyConnected bf16``, ``FullyConnected int8``...), so a Q/DQ placement's effect is visible."""
        from msmlp.runtime.profiling import ranked

        raw = self.perf_counters(x, runs)
        node_ms = {r["node"]: r["ms_per_run"] * runs for r in raw["nodes"]}
        op_of = {r["node"]: f"{r['op']} {r['precision']}" for r in raw["nodes"]}
        found = ranked("openvino", raw["batch"], runs, node_ms, op_of, top)
        kernels = {r["node"]: r["exec_type"] for r in raw["nodes"]}
        for row in found["top_nodes"]:
            row["exec_type"] = kernels.get(row["node"], "?")
        by_precision: dict[str, float] = {}
        for r in raw["nodes"]:
            by_precision[r["precision"]] = by_precision.get(r["precision"], 0.0) + r["ms_per_run"]
        found["ms_by_precision"] = dict(sorted(by_precision.items(), key=lambda kv: -kv[1]))
        return found

    def perf_counters(self, x: np.ndarray, runs: int = 10) -> dict[str, Any]:
        """OpenVINO's own per-layer times (``PERF_COUNT``) over ``runs`` calls after one warm-up call.

        Compiles a second, profiling copy of the model with the same options (cheap with the cache), so
        the backend's own requests never pay for counting. Each row: node, layer type, the kernel
        OpenVINO chose (``exec_type``, e.g. ``brgemm_avx512_bf16``), its precision and mean ms per run.
        """
        info = self.info
        array = self.check_feed({info.input_name: x})
        if runs < 1:
            raise InputError(f"profile runs must be >= 1, got {runs}")
        compiled = self._compile(openvino_module().Core(), info.artifact, self.config(perf_count=True))
        request = compiled.create_infer_request()
        request.infer({0: array})
        totals: dict[str, float] = {}
        meta: dict[str, tuple[str, str]] = {}
        for _ in range(runs):
            request.infer({0: array})
            for p in request.get_profiling_info():
                if p.status.name != "EXECUTED":
                    continue
                totals[p.node_name] = totals.get(p.node_name, 0.0) + p.real_time.total_seconds() * 1e3
                meta[p.node_name] = (p.node_type, p.exec_type)
        nodes = [
            {
                "node": name,
                "op": meta[name][0],
                "exec_type": meta[name][1],
                "precision": kernel_precision(meta[name][1]),
                "ms_per_run": ms / runs,
            }
            for name, ms in totals.items()
        ]
        return {"source": "openvino", "batch": int(array.shape[0]), "runs": runs, "nodes": nodes}


def kernel_precision(exec_type: str) -> str:
    """``brgemm_avx512_amx_I8`` -> ``int8``; ``jit_avx512_bf16`` -> ``bf16``; else ``fp32``/``?``."""
    tail = exec_type.rsplit("_", 1)[-1].lower()
    return _PRECISION_NAMES.get(tail, tail or "?")


def execution_precisions(compiled: Any) -> dict[str, int]:
    """How many compute layers (matmul/conv) OpenVINO actually runs in each precision, e.g.
    ``{"bf16": 25}`` or ``{"int8": 23, "bf16": 2}``: what the hint and the Q/DQ placement achieved."""
    found: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if rt["layerType"].astype(str) in COMPUTE_LAYERS:
            found[
                _PRECISION_NAMES.get(rt["runtimePrecision"].astype(str), rt["runtimePrecision"].astype(str))
            ] += 1
    return dict(found.most_common())


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check "))]
    return (useful or lines or [type(exc).__name__])[0][:300]


# ------------------------------------------------------------------------------------------ table


def _hint_support(hint: str) -> tuple[bool, str]:
    if HINTS.get(hint) == "bf16":
        return bf16_support()
    return True, f"{hint} is exact"


def _open(request: Request) -> Backend:
    return OpenVINOBackend(
        request.source,
        inference_precision=request.precision,
        threads=request.threads,
        artifact=request.artifact,
        cache_dir=None if request.cache else False,
    )


def _compare_rows(sources: Sources, skipped: dict[str, str]) -> Rows:
    """f32 on every graph, and the bf16 hint where the CPU has BF16 (on an INT8 graph instead of f32)."""
    bf16, why = bf16_support()
    if not bf16:
        skipped["openvino bf16"] = why
    rows: Rows = []
    for precision, path in sources.graphs:
        hints = ["f32", "bf16"] if bf16 and precision == "fp32" else ["bf16" if bf16 else "f32"]
        for hint in hints:
            label = f"openvino {'bf16' if hint == 'bf16' and precision == 'fp32' else precision}"
            label += " (bf16 hint)" if precision == "int8" and hint == "bf16" else ""
            rows.append((label, OpenVINOBackend(path, inference_precision=hint, threads=sources.threads)))
    return rows


# ``auto``'s ranks (lower is faster, measured: see docs/performance.md). The verification keys are the
# ones model.json files already record: bf16, fp32_openvino, int8_openvino.
SPEC = BackendSpec(
    name="openvino",
    title="OpenVINO",
    probe=Probe("openvino", INSTALL),
    opens=frozenset({"onnx"}),
    factory=_open,
    hints=("f32", "bf16"),
    hint_support=_hint_support,
    candidates=(
        Candidate("openvino", "bf16", "bf16", "bf16", graph="fp32", rank=10, lowers=True),
        Candidate("openvino", "f32", "fp32_openvino", "fp32", graph="fp32", rank=30),
        Candidate("openvino", "bf16", "int8_openvino", "int8", graph="int8", rank=10, lowers=True),
        Candidate("openvino", "f32", "int8_openvino", "int8", graph="int8", rank=20),
    ),
    verifications=(
        Verification(
            "bf16", "fp32", "bf16", "verify BF16 against PyTorch (OpenVINO, bf16 hint)", ("bf16",), bf16=True
        ),
        Verification(
            "int8_openvino",
            "int8",
            "int8",
            "verify INT8 on OpenVINO against PyTorch FP32 (held out)",
            ("bf16", "f32"),
        ),
    ),
    compare_rows=_compare_rows,
    compare_layer_targets={"openvino": {}, "openvino-bf16": {"precision": "bf16"}},
    intermediate_outputs=True,
    layer_profile=True,
    distributions=("openvino",),
)
