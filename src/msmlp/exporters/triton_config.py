"""Triton's ``config.pbtxt``: built as a ``ModelConfig`` message with Triton's own protobuf schema (shipped
in ``tritonclient``), printed with ``google.protobuf.text_format`` and re-parsed, so it cannot hold a
field Triton does not know; and the checks a parsed config must pass on its own.

Targets (``TARGETS``): ``onnxruntime`` (platform onnxruntime_onnx, model.onnx), ``openvino`` (Triton's
OpenVINO backend reading the same model.onnx, CPU only) and ``tensorrt`` (platform tensorrt_plan,
model.plan, GPU only).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from msmlp.artifacts import ArtifactInfo
from msmlp.errors import InputError, MissingDependencyError


@dataclass(frozen=True)
class Target:
    """How Triton runs one kind of file: a platform or a backend name, and the file it loads."""

    name: str
    kind: str  # the artefact kind it takes: "onnx" | "plan"
    filename: str
    platform: str = ""
    backend: str = ""
    instance_kinds: tuple[str, ...] = ("gpu", "cpu")


TARGETS = {
    "onnxruntime": Target("onnxruntime", "onnx", "model.onnx", platform="onnxruntime_onnx"),
    "openvino": Target("openvino", "onnx", "model.onnx", backend="openvino", instance_kinds=("cpu",)),
    "tensorrt": Target("tensorrt", "plan", "model.plan", platform="tensorrt_plan", instance_kinds=("gpu",)),
}
KINDS = ("gpu", "cpu")
_TRITON_TYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float64": "FP64",
    "int8": "INT8",
    "uint8": "UINT8",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}


@lru_cache(maxsize=1)
def model_config_schema() -> ModuleType:
    """Triton's ``model_config_pb2`` from tritonclient.

    ``tritonclient.grpc``'s package init needs the grpc extra, but the schema module itself only needs
    protobuf; with just ``tritonclient[http]`` installed we load that one file directly.
    """
    try:
        from tritonclient.grpc import model_config_pb2

        return model_config_pb2
    except (ImportError, RuntimeError):
        pass
    spec = importlib.util.find_spec("tritonclient")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py" if spec else None
    if path is None or not path.is_file():
        raise MissingDependencyError(
            "writing a Triton model repository needs Triton's model-config schema from the 'tritonclient' "
            "package, which is not installed; install it with: pip install 'tritonclient[http]'"
        )
    module_spec = importlib.util.spec_from_file_location("msmlp._triton_model_config_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sys.modules[module_spec.name] = module
    return module


def triton_type(dtype: str) -> str:
    """Triton's type name (without TYPE_) for an artefact's dtype; INVALID when it has none."""
    return _TRITON_TYPES.get(dtype, "INVALID")


def static_batch(art: ArtifactInfo) -> int | None:
    """The fixed batch of a graph whose batch axis is a number (then Triton cannot batch it)."""
    firsts = {t.shape[0] for t in (*art.inputs, *art.outputs) if t.shape}
    return firsts.pop() if len(firsts) == 1 and min(firsts) > 0 else None


def target_for(config: Any) -> Target | None:
    """The target a parsed config describes, or None for one msmlp does not write."""
    for target in TARGETS.values():
        if (config.platform, config.backend) == (target.platform, target.backend):
            return target
    return None


def build_config(
    art: ArtifactInfo,
    target: Target,
    name: str,
    max_batch: int,
    preferred: list[int],
    queue_delay_us: int,
    instances: int,
    kind: str,
    labels: bool,
) -> Any:
    """The ``ModelConfig`` message for the artefact (not yet written)."""
    mc = model_config_schema()
    config = mc.ModelConfig(name=name, max_batch_size=max_batch)
    if target.platform:
        config.platform = target.platform
    else:
        config.backend = target.backend
        config.default_model_filename = target.filename
    for spec, tensors in ((config.input, art.inputs), (config.output, art.outputs)):
        for t in tensors:
            entry = spec.add(name=t.name, data_type=mc.DataType.Value(f"TYPE_{triton_type(t.dtype)}"))
            entry.dims.extend(t.shape if max_batch == 0 else t.shape[1:])
    if labels:
        config.output[0].label_filename = "labels.txt"
    if max_batch > 0:
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    group = config.instance_group.add(count=instances)
    group.kind = mc.ModelInstanceGroup.Kind.Value(f"KIND_{kind.upper()}")
    return config


def to_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_text(text: str, where: str) -> Any:
    """A config.pbtxt's text as a ``ModelConfig``; a field Triton does not know is an error."""
    from google.protobuf import text_format

    config = model_config_schema().ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise InputError(f"{where} does not follow Triton's ModelConfig schema: {exc}") from exc
    return config


def config_problems(config: Any, model_dir: Path) -> list[str]:
    """What is wrong with a parsed config on its own (before comparing it with the model file)."""
    mc = model_config_schema()
    problems = []
    target = target_for(config)
    if config.name and config.name != model_dir.name:
        problems.append(f"name {config.name!r} differs from its folder {model_dir.name!r}")
    if target is None:
        known = [t.platform or f"backend {t.backend}" for t in TARGETS.values()]
        problems.append(
            f"platform {config.platform!r} / backend {config.backend!r} is not one msmlp writes ({known})"
        )
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size {config.max_batch_size} is negative")
    if not config.input or not config.output:
        problems.append("it declares no input or no output")
    for t in (*config.input, *config.output):
        if t.data_type == mc.TYPE_INVALID or not t.dims:
            problems.append(f"tensor {t.name!r} lacks a data_type or dims")
        if getattr(t, "label_filename", "") and not (model_dir / t.label_filename).is_file():
            problems.append(f"label file {t.label_filename!r} is missing")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append("dynamic_batching needs max_batch_size > 0")
        bad = [p for p in config.dynamic_batching.preferred_batch_size if not 1 <= p <= config.max_batch_size]
        if bad:
            problems.append(f"preferred_batch_size {bad} outside 1..max_batch_size ({config.max_batch_size})")
    for group in config.instance_group:
        if group.count < 1:
            problems.append(f"instance_group count {group.count} < 1")
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind).removeprefix("KIND_").lower()
        if target is not None and kind in KINDS and kind not in target.instance_kinds:
            problems.append(f"a {target.name} model cannot have KIND_{kind.upper()} instances")
    return problems


def agreement_problems(config: Any, art: ArtifactInfo) -> list[str]:
    """Does the config describe this artefact: tensors, dims, and a batch the profile can run?"""
    mb = config.max_batch_size
    fixed = static_batch(art)
    problems = []
    for declared, actual in ((config.input, art.inputs), (config.output, art.outputs)):
        want = {t.name: tuple(t.shape if mb == 0 else t.shape[1:]) for t in actual}
        got = {t.name: tuple(t.dims) for t in declared}
        if want != got:
            problems.append(f"tensors {got} do not match the model's {want}")
    if fixed is not None and mb != 0:
        problems.append(f"max_batch_size {mb} but the graph has a fixed batch of {fixed}")
    if art.batch is not None and mb > 0:
        lo, _, hi = art.batch
        if mb > hi:
            problems.append(f"max_batch_size {mb} exceeds the batch profile max {hi}")
        if lo > 1:
            problems.append(f"the batch profile starts at {lo}, but Triton sends batches from 1")
    return problems
