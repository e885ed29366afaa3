"""What an exported file *is*: one reader (:func:`read_artifact`); ``model.json`` is written by :mod:`msmlp.manifest`.

An ONNX graph is described by the export's ``model.json`` in its folder (when that lists the file with
the same SHA-256), else by the ``msmlp.*`` metadata inside the graph, else by the graph's own shapes.
A TensorRT plan is described by its ``<plan>.json`` sidecar, which is required: msmlp only loads plans
it built. Every command, backend, the Triton writer and verification read artefacts through here;
nobody else parses ``model.json`` or a sidecar.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from msmlp.errors import EngineError, InputError
from msmlp.features import META_KEY as FEATURES_KEY
from msmlp.features import FeatureLayout
from msmlp.fileio import file_sha256, write_text_atomic
from msmlp.log import logger
from msmlp.models.config import DeployConfig
from msmlp.onnxproto import OnnxHeader, ValueInfo, read_onnx_header

FORMAT = "msmlp-export/1"
PLAN_FORMAT = "msmlp-plan/1"
MANIFEST = "model.json"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
PLAN_SUFFIXES = (".plan", ".engine", ".trt")
UNBOUNDED = 1 << 30
_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16", 7: "int64", 6: "int32"}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output; ``shape[0]`` is ``-1`` when the batch axis is dynamic."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ArtifactInfo:
    """Everything msmlp knows about an ONNX graph or a TensorRT plan. Read-only."""

    path: Path
    kind: str  # "onnx" | "plan"
    precision: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    model: str | None = None
    config: DeployConfig | None = None
    batch: tuple[int, int, int] | None = None  # min, opt, max
    weights: Mapping[str, Any] = field(default_factory=dict)  # {"source": "synthetic"|"checkpoint", ...}
    calibration: Mapping[str, Any] | None = None
    sha256: str | None = None  # as recorded by the export (checked against the file when read)
    versions: Mapping[str, str] = field(default_factory=dict)
    verification: Mapping[str, Any] | None = None  # summary of this file's parity report
    source: Path | None = None  # the model.json or sidecar the description came from
    extra: Mapping[str, Any] = field(default_factory=dict)  # kind-specific: plan build info, int8 info
    features: FeatureLayout | None = None  # a feature export's outputs and sizes (msmlp.features)

    @property
    def synthetic(self) -> bool:
        """Exported with synthetic weights: graph and parity are real, predictions meaningless."""
        return self.weights.get("source") == "synthetic"

    @property
    def batch_range(self) -> tuple[int, int]:
        fixed = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else -1
        if fixed > 0:
            return fixed, fixed
        if self.batch is not None:
            return self.batch[0], self.batch[2]
        return 1, UNBOUNDED

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def output(self) -> TensorInfo:
        return self.outputs[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "model": self.model,
            "precision": self.precision,
            "config": self.config.to_dict() if self.config else None,
            "batch": list(self.batch) if self.batch else None,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "weights": dict(self.weights),
            "calibration": dict(self.calibration) if self.calibration else None,
            "sha256": self.sha256,
            "versions": dict(self.versions),
            "verification": dict(self.verification) if self.verification else None,
            "source": str(self.source) if self.source else None,
            "features": self.features.to_dict() if self.features else None,
        }


# ---------------------------------------------------------------------------------------------- read


def read_artifact(path: str | Path) -> ArtifactInfo:
    """Describe an ONNX graph (``.onnx``) or a TensorRT plan (``.plan``/``.engine``); clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _read_onnx(path)
    if suffix in PLAN_SUFFIXES:
        return _read_plan(path)
    raise InputError(
        f"{str(path)!r} is neither an ONNX graph (.onnx) nor a TensorRT plan ({', '.join(PLAN_SUFFIXES)})"
    )


def _read_onnx(path: Path) -> ArtifactInfo:
    graph = read_onnx_header(path)
    inputs, outputs = _onnx_io(graph)
    embedded = {k.removeprefix("msmlp."): v for k, v in graph.metadata.items() if k.startswith("msmlp.")}
    manifest, entry = _manifest_entry(path)
    model = (manifest or {}).get("model") or embedded.get("model")
    config = _config(manifest.get("config") if manifest else None, model)
    batch = _profile((manifest or {}).get("batch")) or _profile(embedded.get("batch"))
    described = ArtifactInfo(
        path,
        "onnx",
        graph_precision(graph),
        inputs,
        outputs,
        model=model,
        config=config,
        batch=batch,
        features=FeatureLayout.from_metadata(embedded.get(FEATURES_KEY)),
    )
    if entry is None:
        return described
    return replace(  # what model.json adds to what the graph says
        described,
        precision=str(entry.get("precision") or described.precision),
        weights=_frozen(manifest.get("weights") or {}),
        calibration=_frozen((entry.get("info") or {}).get("calibration")),
        sha256=entry.get("sha256"),
        versions=_frozen(manifest.get("versions") or {}),
        verification=_frozen(entry.get("verification")),
        source=path.parent / MANIFEST,
        extra=_frozen(entry.get("info") or {}),
    )


def load_onnx_header(path: Path) -> Any:
    """The ONNX model without external weights, or an :class:`EngineError` naming the file."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, ValueError...: whatever it is, the file is not usable ONNX
        raise EngineError(
            f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}); re-export it with msmlp-export"
        ) from exc


def _onnx_io(graph: OnnxHeader) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    def info(vi: ValueInfo) -> TensorInfo:
        return TensorInfo(vi.name, vi.dims, _ONNX_DTYPES.get(vi.elem_type, f"onnx:{vi.elem_type}"))

    return tuple(info(vi) for vi in graph.feeds), tuple(info(vi) for vi in graph.outputs)


def graph_precision(graph: OnnxHeader) -> str:
    """``int8`` if the graph quantizes (Q/DQ), ``fp16`` if it holds float16 weights, else ``fp32``."""
    if {"QuantizeLinear", "DequantizeLinear"} & graph.op_types:
        return "int8"
    if 10 in graph.initializer_types:  # TensorProto.FLOAT16
        return "fp16"
    return "fp32"


def _manifest_entry(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``model.json`` beside ``path`` and its entry for this file, if it lists it with this file's hash.

    A manifest whose recorded hash differs is stale: it must not decide how the graph is fed.
    """
    manifest = read_json(path.parent / MANIFEST)
    artifacts = manifest.get("artifacts") if manifest else None
    entry = artifacts.get(path.name) if isinstance(artifacts, dict) else None
    if not isinstance(entry, dict):
        return None, None
    if entry.get("sha256") and entry["sha256"] != file_sha256(path):
        logger.warning("%s lists %s with another sha256 (stale metadata); ignoring it", MANIFEST, path.name)
        return None, None
    return manifest, entry


def _read_plan(path: Path) -> ArtifactInfo:
    meta = read_plan_sidecar(path)
    model = meta.get("model") if isinstance(meta.get("model"), str) else None
    config = _config(meta.get("config"), model)
    profile = meta.get("profile") or {}
    batch = None
    if isinstance(profile, dict) and all(isinstance(profile.get(k), list) for k in ("min", "opt", "max")):
        batch = _profile([profile["min"][0], profile["opt"][0], profile["max"][0]])
    inputs = tuple(_tensor(t) for t in meta.get("inputs") or ())
    outputs = tuple(_tensor(t) for t in meta.get("outputs") or ())
    if not inputs and isinstance(profile, dict) and isinstance(profile.get("input"), str):
        inputs = (TensorInfo(profile["input"], (-1, *profile.get("max", [0])[1:])),)
    if config is not None:
        inputs = inputs or (TensorInfo(config.input_name, (-1, *config.input_size)),)
        outputs = outputs or (TensorInfo(config.output_name, (-1, config.num_classes)),)
    if not inputs or not outputs:
        raise EngineError(
            f"{plan_sidecar_path(path)} names no input/output tensors; rebuild with msmlp build"
        )
    return ArtifactInfo(
        path,
        "plan",
        str(meta.get("precision") or "fp32"),
        inputs,
        outputs,
        model=model,
        config=config,
        batch=batch,
        weights=_frozen(meta.get("weights") or {}),
        sha256=meta.get("plan_sha256"),
        versions=_frozen({"tensorrt": str(meta.get("tensorrt_version"))}),
        verification=_frozen(meta.get("verification")),
        source=plan_sidecar_path(path),
        extra=_frozen(meta),
    )


def read_verifications(info: ArtifactInfo) -> dict[str, Mapping[str, Any]]:
    """Verification summaries that ``model.json`` records for this very file, by key.

    Keys: ``fp32``/``fp16``/``int8`` (ONNX Runtime, the file of that precision), ``bf16`` and
    ``<precision>_openvino`` (OpenVINO, with ``"file"`` naming the graph). Empty when no manifest
    describes the file (:func:`read_artifact` checked its hash).
    """
    if info.source is None or info.source.name != MANIFEST:
        return {}
    manifest = read_json(info.source) or {}
    recorded = manifest.get("verification") if isinstance(manifest.get("verification"), dict) else {}
    found: dict[str, Mapping[str, Any]] = {}
    for key, summary in recorded.items():
        if isinstance(summary, dict) and (summary.get("file") or ONNX_FILES.get(key)) == info.path.name:
            found[key] = summary
    if info.verification and info.precision not in found:
        found[info.precision] = info.verification
    return found


def plan_sidecar_path(plan: str | Path) -> Path:
    """``<plan>.json``: the only place a plan's description is looked for."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def read_plan_sidecar(plan: str | Path) -> dict[str, Any]:
    """The sidecar of a plan as written by :func:`write_plan_sidecar`; a clear error when absent or foreign."""
    side = plan_sidecar_path(plan)
    if not side.is_file():
        raise EngineError(
            f"{plan} has no metadata file {side.name}; msmlp only loads plans it built "
            "(never deserialize an engine from an untrusted source): rebuild with msmlp build"
        )
    meta = read_json(side, strict=True)
    if meta.get("format") != PLAN_FORMAT:
        raise EngineError(f"metadata {side} is not an msmlp plan description ({PLAN_FORMAT}); rebuild")
    return meta


def write_plan_sidecar(
    plan: str | Path, metadata: Mapping[str, Any], plan_bytes: bytes | None = None
) -> dict:
    """Write ``<plan>.json`` for a plan (hash of ``plan_bytes`` when given, else of the file); return it."""
    import hashlib

    plan = Path(plan)
    data = plan_bytes if plan_bytes is not None else plan.read_bytes()
    meta = {
        "format": PLAN_FORMAT,
        **metadata,
        "plan": plan.name,
        "plan_sha256": hashlib.sha256(data).hexdigest(),
        "plan_bytes": len(data),
    }
    write_text_atomic(plan_sidecar_path(plan), json.dumps(meta, indent=2, default=str) + "\n")
    return meta


def read_json(path: Path, *, strict: bool = False) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if strict:
            raise EngineError(f"metadata {path} is unreadable ({exc}); rebuild the engine") from exc
        logger.warning("ignoring unreadable metadata %s (%s)", path, exc)
        return None
    if not isinstance(data, dict):
        if strict:
            raise EngineError(f"metadata {path} holds a {type(data).__name__}, expected a JSON object")
        return None
    return data


def _config(recorded: Any, model: str | None) -> DeployConfig | None:
    if isinstance(recorded, dict):
        try:
            return DeployConfig.from_dict(recorded)
        except (TypeError, ValueError):
            logger.warning("unreadable deploy config in metadata; using the registered model's")
    if model and importlib.util.find_spec("torch") is not None:  # the registry is PyTorch's ([export])
        from msmlp.models.registry import get_config, list_models

        if model in list_models():
            return get_config(model)
    return None


def _profile(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, str):
        value = value.split(",")
    try:
        lo, opt, hi = (int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (lo, opt, hi) if 1 <= lo <= opt <= hi else None


def _tensor(spec: Any) -> TensorInfo:
    return TensorInfo(
        str(spec["name"]), tuple(int(d) for d in spec["shape"]), str(spec.get("dtype", "float32"))
    )


def _frozen(value: Any) -> Any:
    return MappingProxyType(dict(value)) if isinstance(value, dict) else value
