"""ONNX Runtime behind the backend protocol: CPU by default, CUDA / TensorRT execution providers on request.

``session_from_onnx`` is the loader (after Polygraphy's ``SessionFromOnnx``); :class:`OnnxRuntimeBackend`
runs it. Names and shapes come from the session; model, precision, deploy config and batch range from
:func:`msmlp.artifacts.read_artifact`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.artifacts import ArtifactInfo, read_artifact
from msmlp.errors import EngineError, InputError
from msmlp.log import logger
from msmlp.runtime.base import Backend, BackendInfo
from msmlp.runtime.registry import BackendSpec, Candidate, Probe, Request, Rows, Sources

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
OPTIMIZATION = ("disable", "basic", "extended", "all")
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """``None`` -> CPU; ``"auto"`` -> TensorRT, CUDA (when a GPU is present), then CPU; else the named ones.

    Names may be short (``cpu``, ``cuda``, ``tensorrt``) or ONNX Runtime's own.
    """
    import onnxruntime as ort

    if providers is None:
        return [PROVIDERS["cpu"]]
    available = ort.get_available_providers()
    if isinstance(providers, str) and providers == "auto":
        gpu = [p for p in GPU_PROVIDERS if p in available] if _gpu_present() else []
        return [*gpu, PROVIDERS["cpu"]]
    names = [providers] if isinstance(providers, str) else list(providers)
    resolved = [PROVIDERS.get(n.lower(), n) for n in names]
    missing = [n for n in resolved if n not in available]
    if missing or not resolved:
        raise InputError(
            f"execution provider(s) {missing or names} are not available in this onnxruntime build; "
            f"available: {', '.join(available)} (or 'auto', or short names {', '.join(PROVIDERS)})"
        )
    return resolved


def session_from_onnx(
    path: str | Path,
    *,
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
    optimization: str = "all",
    spin: bool = False,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path``; clear :class:`EngineError` for unusable files.

    Asked-for GPU providers that fail to start are an error, not a silent fall-back to the CPU
    (``"auto"`` does fall back, and logs it). ``spin=False`` makes idle intra-op threads sleep instead
    of busy-waiting: on a machine whose cores are shared (other processes, the HTTP server, a batcher
    thread) spinning threads steal them (measured: see docs/performance.md).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"ONNX file {str(path)!r} does not exist or is not a file")
    check_threads(threads)
    wanted = resolve_providers(providers)
    options = ort.SessionOptions()
    options.graph_optimization_level = _optimization_level(optimization)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=wanted)
    except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, NotImplemented...
        logger.debug("ONNX Runtime could not load %s", path, exc_info=True)
        raise EngineError(
            f"ONNX Runtime cannot load {str(path)!r}: {_ort_message(exc)}; is it a complete .onnx file "
            "(re-export with msmlp-export)?"
        ) from exc
    active = session.get_providers()
    dropped = [p for p in wanted if p not in active]
    if dropped and providers != "auto":
        raise EngineError(
            f"execution provider(s) {dropped} failed to start (active: {active}); check the CUDA/cuDNN/TensorRT "
            "libraries, or use providers 'cpu'"
        )
    if dropped:
        logger.info("onnxruntime: %s unavailable, running on %s", ", ".join(dropped), ", ".join(active))
    return session


def check_threads(threads: int | None) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputError(
            f"threads must be a positive integer or None (ONNX Runtime's default), got {threads!r}"
        )


def _optimization_level(name: str) -> Any:
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if name not in levels:
        raise InputError(f"optimization {name!r} is not one of {', '.join(OPTIMIZATION)}")
    return levels[name]


def _gpu_present() -> bool:
    """A CUDA driver is loaded (cheap check, so 'auto' does not make ORT log failed library loads)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def _ort_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" : ", 2)[-1] if text.startswith("[ONNXRuntimeError]") else text


# --------------------------------------------------------------------------------------- backend


class OnnxRuntimeBackend(Backend):
    """An ONNX graph on ONNX Runtime. ``providers``: None (CPU), ``"auto"``, or names; ``threads``:
    intra-op threads (None: ONNX Runtime's default, one per physical core); ``spin``: let idle threads
    busy-wait (lower latency on a dedicated machine, much higher on a shared one). ``artifact``: the
    file's description when the caller already has it (a staged file before its manifest exists);
    by default it is read with :func:`msmlp.artifacts.read_artifact`."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        optimization: str = "all",
        spin: bool = False,
        *,
        artifact: ArtifactInfo | None = None,
    ) -> None:
        super().__init__()
        check_threads(threads)
        if optimization not in OPTIMIZATION:
            raise InputError(f"optimization {optimization!r} is not one of {', '.join(OPTIMIZATION)}")
        self.path = Path(path)
        self.providers = providers
        self.threads = threads
        self.optimization = optimization
        self.spin = spin
        self.session: Any = None
        self._artifact = artifact
        self._input_dtype: type = np.float32

    def _load(self) -> BackendInfo:
        artifact = self._artifact or read_artifact(self.path)
        session = session_from_onnx(
            self.path,
            providers=self.providers,
            threads=self.threads,
            optimization=self.optimization,
            spin=self.spin,
        )
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise EngineError(
                f"{self.path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                "expected one image input and a logits output"
            )
        self._input_dtype = _DTYPES.get(inputs[0].type, np.float32)
        self.session = session
        return BackendInfo.of_artifact(
            artifact,
            backend=self.name,
            precision=artifact.precision,
            input_name=inputs[0].name,
            input_shape=tuple(d if isinstance(d, int) else -1 for d in inputs[0].shape),
            output_name=outputs[0].name,
            details={"providers": session.get_providers(), "threads": self.threads},
        )

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        info = self.info
        array = feed[info.input_name]
        if array.dtype != self._input_dtype:
            array = array.astype(self._input_dtype)
        try:
            (out,) = self.session.run([info.output_name], {info.input_name: array})
        except Exception as exc:  # ORT's Fail / InvalidArgument on a graph it loaded but cannot run
            logger.debug("ONNX Runtime failure", exc_info=True)
            raise EngineError(f"ONNX Runtime failed on {self.path.name}: {_ort_message(exc)}") from exc
        return {info.output_name: np.asarray(out, dtype=np.float32)}

    def _infer_outputs(self, feed: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        array = feed[self.info.input_name]
        if array.dtype != self._input_dtype:
            array = array.astype(self._input_dtype)
        try:
            values = self.session.run(list(names), {self.info.input_name: array})
        except Exception as exc:  # ORT's Fail / InvalidArgument, e.g. a name that is not a graph output
            logger.debug("ONNX Runtime failure", exc_info=True)
            raise EngineError(f"ONNX Runtime failed on {self.path.name}: {_ort_message(exc)}") from exc
        return dict(zip(names, values))

    def _close(self) -> None:
        self.session = None

    def profile_layers(self, x: np.ndarray, *, runs: int = 10, top: int = 15) -> dict[str, Any]:
        """A profiling session beside the backend's (same providers and threads): nodes and op types
        ranked by kernel time over ``runs`` runs, after one warm-up run that is left out."""
        import math
        import tempfile

        import onnxruntime as ort

        from msmlp.runtime.profiling import ranked, read_trace

        array = self.check_feed({self.info.input_name: x}).astype(self._input_dtype)
        with tempfile.TemporaryDirectory(prefix="msmlp-ortprof-") as tmp:
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "ort")
            if self.threads:
                options.intra_op_num_threads = int(self.threads)
            providers = list(self.info.details.get("providers") or [PROVIDERS["cpu"]])
            session = ort.InferenceSession(str(self.path), options, providers=providers)
            feed = {session.get_inputs()[0].name: array}
            for _ in range(runs + 1):
                session.run(None, feed)
            events = read_trace(session.end_profiling())
        model_runs = sorted(
            (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
            key=lambda e: e["ts"],
        )
        warm_end = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else -math.inf
        node_ms: dict[str, float] = {}
        op_of: dict[str, str] = {}
        for e in events:
            name = str(e.get("name", ""))
            if e.get("cat") == "Node" and name.endswith("_kernel_time") and e["ts"] >= warm_end:
                node = name[: -len("_kernel_time")]
                node_ms[node] = node_ms.get(node, 0.0) + float(e.get("dur", 0)) / 1e3
                op_of[node] = str(e.get("args", {}).get("op_name", "?"))
        return ranked("onnxruntime", len(x), max(len(model_runs) - 1, 1), node_ms, op_of, top)


# ------------------------------------------------------------------------------------------ table


def _open(request: Request) -> Backend:
    return OnnxRuntimeBackend(
        request.source, providers=request.providers, threads=request.threads, artifact=request.artifact
    )


def _compare_rows(sources: Sources, skipped: dict[str, str]) -> Rows:
    return [
        (f"onnxruntime {precision}", OnnxRuntimeBackend(path, threads=sources.threads))
        for precision, path in sources.graphs
    ]


# ``auto``'s ranks (lower is faster, measured: see docs/performance.md): ONNX Runtime is the FP32 and
# FP16 runtime; on an INT8 Q/DQ graph OpenVINO comes first.
SPEC = BackendSpec(
    name="onnxruntime",
    title="ONNX Runtime",
    probe=Probe("onnxruntime", "pip install onnxruntime-gpu"),
    opens=frozenset({"onnx"}),
    factory=_open,
    candidates=(
        Candidate("onnxruntime", None, "fp32", "fp32", graph="fp32", rank=20),
        Candidate("onnxruntime", None, "int8", "int8", graph="int8", rank=30),
        Candidate("onnxruntime", None, "fp16", "fp16", graph="fp16", rank=10),
    ),
    compare_rows=_compare_rows,
    compare_layer_targets={
        "onnxruntime": {},
        "tensorrt": {"providers": ["tensorrt", "cpu"]},  # ONNX Runtime's TensorRT execution provider
        "cuda": {"providers": ["cuda", "cpu"]},
    },
    intermediate_outputs=True,
    layer_profile=True,
    distributions=("onnxruntime-gpu", "onnxruntime"),
)
