"""ONNX Runtime behind the backend protocol: CPU by default, CUDA / TensorRT execution providers on request.

``session_from_onnx`` is the loader (after Polygraphy's ``SessionFromOnnx``); :class:`OnnxRuntimeBackend`
runs it. Names, shapes and the batch range come from the graph, refined by the export metadata
(``model.json`` beside the file, or the ``msmlp.*`` keys inside the graph) when present, which also
lets :meth:`OnnxRuntimeBackend.check_model` refuse an ONNX file exported from a different model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.errors import EngineError, InputError
from msmlp.log import logger
from msmlp.runtime.base import Backend

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
OPTIMIZATION = ("disable", "basic", "extended", "all")
UNBOUNDED = 1 << 30
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
    thread) spinning threads steal them; measured on s2mlpv2_small at batch 1 on the shared 2-core
    development machine: 89 ms without spinning, 240 ms with.
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
        raise EngineError(
            f"ONNX Runtime cannot load {str(path)!r}: {_ort_message(exc)}; is it a complete .onnx file "
            "(re-export with msmlp-export)?"
        ) from None
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


# -------------------------------------------------------------------------------------- metadata


def find_metadata(onnx_path: str | Path) -> dict[str, Any] | None:
    """The export metadata that lists ``onnx_path`` under ``artifacts``: ``<stem>.json`` beside it, else
    the folder's ``model.json``. ``None`` if there is none, or if its recorded sha256 is not this file's
    (stale metadata must not decide how a graph is fed): the caller then relies on the graph alone."""
    path = Path(onnx_path)
    for candidate in dict.fromkeys((path.with_suffix(".json"), path.parent / "model.json")):
        meta = _read_json(candidate)
        artifacts = meta.get("artifacts") if meta else None
        entry = artifacts.get(path.name) if isinstance(artifacts, dict) else None
        if not isinstance(entry, dict):
            continue
        if entry.get("sha256") and entry["sha256"] != file_sha256(path):
            logger.warning(
                "%s lists %s with another sha256 (stale metadata); ignoring it", candidate, path.name
            )
            return None
        return meta
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable metadata %s (%s)", path, exc)
        return None
    return data if isinstance(data, dict) else None


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- backend


class OnnxRuntimeBackend(Backend):
    """An ONNX graph on ONNX Runtime. ``providers``: None (CPU), ``"auto"``, or names; ``threads``:
    intra-op threads (None: ONNX Runtime's default, one per physical core); ``spin``: let idle threads
    busy-wait (lower latency on a dedicated machine, much higher on a shared one)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        optimization: str = "all",
        spin: bool = False,
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
        self.metadata: dict[str, Any] = {}
        self.model_name: str | None = None
        self.output_shape: tuple[int, ...] = ()
        self._input_dtype: type = np.float32

    def _load(self) -> None:
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
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inputs[0].shape)
        self._input_dtype = _DTYPES.get(inputs[0].type, np.float32)
        self.output_shape = tuple(d if isinstance(d, int) else -1 for d in outputs[0].shape)
        props = session.get_modelmeta().custom_metadata_map
        embedded = {k.removeprefix("msmlp."): v for k, v in props.items() if k.startswith("msmlp.")}
        self.metadata = find_metadata(self.path) or {}
        self.model_name = self.metadata.get("model") or embedded.get("model")
        self.batch_range = self._batch_range(embedded)
        self.precision = self._precision()
        self.session = session

    def _batch_range(self, embedded: dict[str, str]) -> tuple[int, int]:
        batch = self.input_shape[0] if self.input_shape else -1
        if batch != -1:
            return batch, batch
        profile = self.metadata.get("batch")
        if profile is None and "batch" in embedded:
            profile = embedded["batch"].split(",")
        try:
            lo, _, hi = (int(v) for v in profile)  # type: ignore[union-attr]
            return lo, hi
        except (TypeError, ValueError):
            return 1, UNBOUNDED

    def _precision(self) -> str:
        entry = self.metadata.get("artifacts", {}).get(self.path.name, {})
        if isinstance(entry, dict) and entry.get("precision"):
            return str(entry["precision"])
        return graph_precision(self.path)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        array = feed[self.input_name]
        if array.dtype != self._input_dtype:
            array = array.astype(self._input_dtype)
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: array})
        except Exception as exc:  # ORT's Fail / InvalidArgument on a graph it loaded but cannot run
            raise EngineError(f"ONNX Runtime failed on {self.path.name}: {_ort_message(exc)}") from None
        return {self.output_name: np.asarray(out, dtype=np.float32)}

    def _close(self) -> None:
        self.session = None

    # -- what the file is --------------------------------------------------------------------------
    def check_model(self, name: str, config: Any) -> None:
        """Refuse a graph exported from another model: by recorded name when known, else by shapes."""
        self.load()
        if self.model_name and self.model_name != name:
            raise InputError(
                f"{self.path} was exported from model {self.model_name!r}, not {name!r}; pass "
                f"--model {self.model_name} or the ONNX file exported for {name}"
            )
        want_in = (-1, *config.input_size)
        if len(self.input_shape) != len(want_in) or any(
            g != -1 and g != w for g, w in zip(self.input_shape[1:], want_in[1:])
        ):
            raise InputError(
                f"{self.path} takes input {_fmt(self.input_shape)} but model {name!r} takes {_fmt(want_in)}; "
                "is it the ONNX file of a different model?"
            )
        classes = self.output_shape[-1] if self.output_shape else -1
        if classes not in (-1, config.num_classes):
            raise InputError(
                f"{self.path} outputs {classes} classes but model {name!r} has {config.num_classes}; "
                "is it the ONNX file of a different model?"
            )

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        active = self.session.get_providers() if self.session is not None else None
        info.update(file=str(self.path), model=self.model_name, providers=active, threads=self.threads)
        return info


def graph_precision(path: str | Path) -> str:
    """``int8`` if the graph quantizes (Q/DQ), ``fp16`` if it holds float16 weights, else ``fp32``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in graph.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer):
        return "fp16"
    return "fp32"


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join("N" if d == -1 else str(d) for d in shape) + ")"
