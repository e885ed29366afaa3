"""Triton Inference Server model repository for an exported model: scale out on a server that exists.

Layout written (Triton's convention)::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/labels.txt              (ImageNet labels, when the output has 1000 classes)
    <repo>/<name>/<version>/model.onnx    (+ external weight files)  or  model.plan
    <repo>/<name>/<version>/model.plan.json   (a plan's sidecar metadata, kept for validation)

``config.pbtxt`` is built as a ``ModelConfig`` message with Triton's own protobuf schema (shipped in
the ``tritonclient`` package) and printed with ``google.protobuf.text_format``, so it cannot contain a
field Triton does not know. ``max_batch_size`` comes from the batch profile the artefact was exported
or built with (``msmlp.batch`` in the ONNX graph or ``"batch"`` in model.json, ``"profile"`` in the
plan's sidecar) and may not exceed it: Triton would otherwise send batches the engine rejects.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from msmlp.errors import InputError, MissingDependencyError
from msmlp.fileio import atomic_path, write_text_atomic
from msmlp.log import logger

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "plan": ("tensorrt_plan", "model.plan")}
KINDS = ("gpu", "cpu")
_ONNX_TYPES = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    16: "BF16",
}
_NAMED_TYPES = {
    "float32": "FP32",
    "fp32": "FP32",
    "float": "FP32",
    "float16": "FP16",
    "fp16": "FP16",
    "half": "FP16",
    "bfloat16": "BF16",
    "bf16": "BF16",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "bool": "BOOL",
    "float64": "FP64",
}


# -- the schema ----------------------------------------------------------------------------------------
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


# -- what the artefact says about itself ---------------------------------------------------------------
@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # without the batch axis; -1 for a dynamic dimension
    dtype: str  # Triton type without the TYPE_ prefix: FP32, FP16, ...


@dataclass(frozen=True)
class Artifact:
    """An ONNX file or TensorRT plan, with its I/O and batch profile as far as they can be known."""

    path: Path
    kind: str  # "onnx" | "plan"
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    profile: tuple[int, int, int] | None  # batch min, opt, max
    static_batch: int | None  # an ONNX graph whose batch axis is a fixed number
    extra_files: tuple[Path, ...]  # ONNX external-data files
    metadata_path: Path | None
    model: str | None = None  # the registered model it was exported from, when recorded


def sidecar_path(plan: Path) -> Path | None:
    """The metadata JSON beside a TensorRT plan: ``<plan>.json`` (or ``<stem>.json``)."""
    for candidate in (Path(f"{plan}.json"), plan.with_suffix(".json")):
        if candidate.is_file() and candidate != plan:
            return candidate
    return None


def read_sidecar(plan: str | Path) -> dict[str, Any]:
    """A plan's metadata JSON as a dict, or ``{}`` when there is none; a corrupt one is an error."""
    path = sidecar_path(Path(plan))
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"metadata {str(path)!r} is not readable JSON ({exc}); rebuild the engine") from None
    if not isinstance(data, dict):
        raise InputError(f"metadata {str(path)!r} holds a {type(data).__name__}, expected a JSON object")
    return data


def graph_metadata(model: Any) -> dict[str, Any]:
    """``msmlp.*`` entries of an ONNX model's metadata_props (written by ``export_onnx``), with
    comma-separated integers such as ``"1,8,64"`` turned into lists."""
    found: dict[str, Any] = {}
    for prop in model.metadata_props:
        if prop.key.startswith("msmlp."):
            parts = prop.value.split(",")
            is_ints = all(p.strip().isdigit() for p in parts)
            found[prop.key[len("msmlp.") :]] = [int(p) for p in parts] if is_ints else prop.value
    return found


def artifact_metadata(artifact: str | Path) -> dict[str, Any]:
    """What an artefact says about itself. ONNX: the graph's own ``msmlp.*`` metadata, overridden by
    the export's ``model.json`` when that lists this file (checked by sha256); a plan: its sidecar."""
    path = Path(artifact)
    if path.suffix.lower() == ".onnx":
        return _onnx_metadata(path, _load_onnx(path))
    return read_sidecar(path)


def _load_onnx(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist or is not a file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(
            f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}: {exc})"
        ) from None


def _onnx_metadata(path: Path, model: Any) -> dict[str, Any]:
    from msmlp.runtime.ort import find_metadata

    return {**graph_metadata(model), **(find_metadata(path) or {})}


def batch_profile(meta: dict[str, Any]) -> tuple[int, int, int] | None:
    """(min, opt, max) batch from ``"batch"`` or ``"profile"``: [min,opt,max], {"min":..}, or per-input
    shapes ({name: [min_shape, opt_shape, max_shape]})."""
    for key in ("batch", "profile", "batch_profile"):
        found = _as_profile(meta.get(key))
        if found is not None:
            return found
    return None


def _as_profile(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, dict):
        if all(k in value for k in ("min", "opt", "max")):
            return _as_profile([value["min"], value["opt"], value["max"]])
        for inner in value.values():  # {input_name: profile}
            found = _as_profile(inner)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)) and len(value) == 3:
        firsts = [v[0] if isinstance(v, (list, tuple)) and v else v for v in value]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in firsts):
            lo, opt, hi = firsts
            if not 1 <= lo <= opt <= hi:
                raise InputError(f"batch profile {list(firsts)} is not ordered as 1 <= min <= opt <= max")
            return lo, opt, hi
    return None


def inspect_artifact(path: str | Path) -> Artifact:
    """Read I/O names, shapes, types and the batch profile from an ONNX file or a plan's sidecar."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist or is not a file")
    if path.suffix.lower() == ".onnx":
        return _inspect_onnx(path)
    if path.suffix.lower() in (".plan", ".engine", ".trt"):
        return _inspect_plan(path, read_sidecar(path))
    raise InputError(f"{str(path)!r}: expected an ONNX file (.onnx) or a TensorRT plan (.plan/.engine)")


def _inspect_onnx(path: Path) -> Artifact:
    import onnx

    model = _load_onnx(path)
    meta = _onnx_metadata(path, model)
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    batch_dims: set[int | None] = set()

    def tensor(vi: Any) -> Tensor:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
        if not dims:
            raise InputError(f"{str(path)!r}: tensor {vi.name!r} has no shape; export with a fixed rank")
        batch_dims.add(dims[0] if dims[0] > 0 else None)
        return Tensor(vi.name, tuple(dims[1:]), _ONNX_TYPES.get(t.elem_type, "INVALID"))

    inputs = tuple(tensor(vi) for vi in graph.input if vi.name not in weights)
    outputs = tuple(tensor(vi) for vi in graph.output)
    static = next(iter(batch_dims)) if len(batch_dims) == 1 else None
    extra = []
    for init in graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in init.external_data if e.key == "location"), None)
            if location and (path.parent / location) not in extra:
                extra.append(path.parent / location)
    missing = [str(p) for p in extra if not p.is_file()]
    if missing:
        raise InputError(
            f"{str(path)!r} keeps its weights in {missing}, which do not exist; copy them beside it"
        )
    # The graph carries its own profile (msmlp.batch), so no metadata file is copied for ONNX.
    name = meta.get("model") if isinstance(meta.get("model"), str) else None
    return Artifact(path, "onnx", inputs, outputs, batch_profile(meta), static, tuple(extra), None, name)


def _inspect_plan(path: Path, meta: dict[str, Any]) -> Artifact:
    if not meta:
        raise InputError(
            f"TensorRT plan {str(path)!r} has no metadata file {path.name}.json beside it; the plan's batch "
            "profile and tensor names come from there (msmlp build writes it)"
        )
    inputs, outputs = _tensors_from_meta(meta)
    if not inputs or not outputs:
        raise InputError(
            f"metadata for {str(path)!r} names no input/output tensors (keys 'inputs'/'outputs' or 'config')"
        )
    name = meta.get("model") if isinstance(meta.get("model"), str) else None
    return Artifact(path, "plan", inputs, outputs, batch_profile(meta), None, (), sidecar_path(path), name)


def _tensors_from_meta(meta: dict[str, Any]) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """I/O from ``inputs``/``outputs`` (lists of {name, shape, dtype}, or {name: shape}), else the
    input of ``msmlp build``'s ``profile``, else the model's DeployConfig (``config`` or ``model``)."""

    def parse(value: Any) -> tuple[Tensor, ...]:
        items = value.items() if isinstance(value, dict) else [(None, v) for v in value or []]
        found = []
        for key, item in items:
            spec = item if isinstance(item, dict) else {"shape": item}
            name = spec.get("name", key)
            shape = spec.get("shape") or spec.get("dims")
            if not name or not isinstance(shape, (list, tuple)) or not shape:
                continue
            dims = tuple(int(d) if isinstance(d, int) and d > 0 else -1 for d in shape[1:])
            dtype = _NAMED_TYPES.get(
                str(spec.get("dtype", "float32")).lower().replace("torch.", ""), "INVALID"
            )
            found.append(Tensor(str(name), dims, dtype))
        return tuple(found)

    inputs, outputs = parse(meta.get("inputs")), parse(meta.get("outputs"))
    profile = meta.get("profile")
    if not inputs and isinstance(profile, dict) and isinstance(profile.get("input"), str):
        inputs = parse([{"name": profile["input"], "shape": profile.get("max")}])  # msmlp build's sidecar
    config = config_from_metadata(meta)
    if config is not None:
        inputs = inputs or (Tensor(config.input_name, tuple(config.input_size), "FP32"),)
        outputs = outputs or (Tensor(config.output_name, (config.num_classes,), "FP32"),)
    return inputs, outputs


def config_from_metadata(meta: dict[str, Any]) -> Any:
    """The DeployConfig under ``config``, else the registered model's (``model``), else None."""
    import dataclasses

    from msmlp.models.registry import DeployConfig, get_config

    if isinstance(meta.get("config"), dict):
        known = {f.name for f in dataclasses.fields(DeployConfig)}
        try:
            return DeployConfig.from_dict({k: v for k, v in meta["config"].items() if k in known})
        except (TypeError, ValueError):
            return None
    if isinstance(meta.get("model"), str):
        try:
            return get_config(meta["model"])
        except InputError:
            return None
    return None


# -- writing -----------------------------------------------------------------------------------------
def write_repository(
    repo: str | Path,
    *,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    name: str | None = None,
    version: int = 1,
    max_batch: int | None = None,
    preferred: list[int] | None = None,
    queue_delay_us: int = 100,
    instances: int = 1,
    kind: str = "gpu",
) -> Path:
    """Write ``<repo>/<name>`` for an ONNX file or a TensorRT plan; returns the model folder.

    Everything is checked before anything is written; files are written atomically, ``config.pbtxt``
    last, and the result is re-read by :func:`validate_repository`.
    """
    given = [(k, v) for k, v in (("onnx", onnx), ("engine", engine)) if v is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one of --onnx or --engine (got {[k for k, _ in given] or 'none'})")
    art = inspect_artifact(given[0][1])
    name = name or _default_name(art)
    _check_options(art, name, version, queue_delay_us, instances, kind)
    mb = _max_batch_size(art, max_batch)
    sizes = _preferred_sizes(art, mb, preferred)
    config = build_config(art, name, mb, sizes, queue_delay_us, instances, kind)
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    model_dir = Path(repo) / name
    _write_files(art, model_dir, version, text, with_labels=_has_imagenet_output(art))
    validate_repository(model_dir)
    logger.info("wrote Triton model %r (max_batch_size %d) to %s", name, mb, model_dir)
    return model_dir


def build_config(
    art: Artifact,
    name: str,
    max_batch: int,
    preferred: list[int],
    queue_delay_us: int,
    instances: int,
    kind: str,
) -> Any:
    """The ``ModelConfig`` message for the artefact (not yet written)."""
    mc = model_config_schema()
    config = mc.ModelConfig(name=name, platform=PLATFORMS[art.kind][0], max_batch_size=max_batch)
    lead = (art.static_batch,) if max_batch == 0 and art.static_batch else ()
    for spec, tensors in ((config.input, art.inputs), (config.output, art.outputs)):
        for t in tensors:
            entry = spec.add(name=t.name, data_type=mc.DataType.Value(f"TYPE_{t.dtype}"))
            entry.dims.extend((*lead, *t.dims))
    if _has_imagenet_output(art):
        config.output[0].label_filename = "labels.txt"
    if max_batch > 0:
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    group = config.instance_group.add(count=instances)
    group.kind = mc.ModelInstanceGroup.Kind.Value(f"KIND_{kind.upper()}")
    return config


def _default_name(art: Artifact) -> str:
    if art.model:
        return art.model
    return art.path.stem if art.path.stem != "model" else art.path.resolve().parent.name


def _check_options(
    art: Artifact, name: str, version: int, queue_delay_us: int, instances: int, kind: str
) -> None:
    if not name or not all(c.isalnum() or c in "_.-" for c in name) or name.startswith("."):
        raise InputError(f"model name {name!r} must be letters, digits, '_', '.', '-' (pass --name)")
    if not isinstance(version, int) or version < 1:
        raise InputError(f"version must be an integer >= 1 (Triton's numbered folders), got {version!r}")
    if queue_delay_us < 0:
        raise InputError(f"queue delay must be >= 0 microseconds, got {queue_delay_us}")
    if instances < 1:
        raise InputError(f"instance count must be >= 1, got {instances}")
    if kind not in KINDS:
        raise InputError(f"instance kind {kind!r} is not one of {list(KINDS)}")
    if art.kind == "plan" and kind == "cpu":
        raise InputError(
            "a TensorRT plan runs only on a GPU; use --kind gpu (or export ONNX for CPU instances)"
        )
    bad = [t.name for t in (*art.inputs, *art.outputs) if t.dtype == "INVALID"]
    if bad:
        raise InputError(f"tensors {bad} of {str(art.path)!r} have a type Triton's config cannot express")


def _max_batch_size(art: Artifact, requested: int | None) -> int:
    if art.static_batch is not None:
        if requested not in (None, 0):
            raise InputError(
                f"{str(art.path)!r} has a fixed batch of {art.static_batch}, so Triton cannot batch it "
                f"(--max-batch {requested}); re-export with a dynamic batch axis"
            )
        return 0
    if requested is not None and requested < 1:
        raise InputError(f"--max-batch must be >= 1, got {requested}")
    if art.profile is None:
        if art.kind == "plan":
            raise InputError(
                f"metadata for {str(art.path)!r} has no batch profile ('profile': [min, opt, max])"
            )
        if requested is None:
            raise InputError(
                f"{str(art.path)!r} has no metadata with a batch profile (model.json 'batch'); "
                "pass --max-batch N"
            )
        return requested
    lo, _, hi = art.profile
    if lo > 1:
        raise InputError(
            f"the batch profile of {str(art.path)!r} starts at {lo}, but Triton sends batches from 1; "
            "rebuild with a minimum batch of 1"
        )
    if requested is not None and requested > hi:
        raise InputError(
            f"--max-batch {requested} exceeds the batch profile max {hi} of {str(art.path)!r}; "
            f"use --max-batch <= {hi} or rebuild with a larger profile"
        )
    return hi if requested is None else requested


def _preferred_sizes(art: Artifact, max_batch: int, preferred: list[int] | None) -> list[int]:
    if max_batch == 0:
        if preferred:
            raise InputError("preferred batch sizes need a batching model (max_batch_size > 0)")
        return []
    if preferred is None:
        opt = art.profile[1] if art.profile else max_batch
        return sorted({min(opt, max_batch), max_batch})
    bad = [p for p in preferred if not 1 <= p <= max_batch]
    if bad:
        raise InputError(f"preferred batch sizes {bad} are outside 1..max_batch_size ({max_batch})")
    return sorted(set(preferred))


def _has_imagenet_output(art: Artifact) -> bool:
    return len(art.outputs) == 1 and art.outputs[0].dims == (1000,)


def _write_files(art: Artifact, model_dir: Path, version: int, text: str, with_labels: bool) -> None:
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    filename = PLATFORMS[art.kind][1]
    _copy_atomic(art.path, version_dir / filename)
    for extra in art.extra_files:
        relative = extra.relative_to(art.path.parent)
        if ".." in relative.parts:
            raise InputError(f"external data {str(extra)!r} lies outside the model's folder")
        (version_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        _copy_atomic(extra, version_dir / relative)
    if art.metadata_path is not None:
        _copy_atomic(art.metadata_path, version_dir / f"{filename}.json")
    if with_labels:
        from msmlp.data.labels import imagenet_classes

        write_text_atomic(model_dir / "labels.txt", "\n".join(imagenet_classes()) + "\n")
    write_text_atomic(model_dir / "config.pbtxt", text)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# -- validation --------------------------------------------------------------------------------------
def validate_repository(path: str | Path, name: str | None = None) -> Any:
    """Parse ``config.pbtxt`` with Triton's schema and check it against the files; returns the
    ``ModelConfig``. ``path`` is a model folder, or a repository (then ``name`` or its only model)."""
    from google.protobuf import text_format

    model_dir = _model_dir(Path(path), name)
    config = model_config_schema().ModelConfig()
    try:
        text_format.Parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"), config)
    except text_format.ParseError as exc:
        raise InputError(
            f"{model_dir / 'config.pbtxt'} does not follow Triton's ModelConfig schema: {exc}"
        ) from None
    problems = _config_problems(config, model_dir) + _version_problems(config, model_dir)
    if problems:
        raise InputError(f"Triton model {str(model_dir)!r} is not valid: " + "; ".join(problems))
    return config


def _model_dir(path: Path, name: str | None) -> Path:
    if name is not None:
        path = path / name
    if (path / "config.pbtxt").is_file():
        return path
    models = sorted(p for p in path.glob("*/config.pbtxt")) if path.is_dir() else []
    if len(models) == 1:
        return models[0].parent
    found = [p.parent.name for p in models]
    raise InputError(
        f"{str(path)!r} is not a Triton model folder (no config.pbtxt)"
        + (f"; it holds models {found}: pass the name" if found else "")
    )


def _config_problems(config: Any, model_dir: Path) -> list[str]:
    mc = model_config_schema()
    problems = []
    if config.name and config.name != model_dir.name:
        problems.append(f"name {config.name!r} differs from its folder {model_dir.name!r}")
    if config.platform not in {p for p, _ in PLATFORMS.values()}:
        problems.append(
            f"platform {config.platform!r} is not one msmlp writes ({[p for p, _ in PLATFORMS.values()]})"
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
        if config.platform == PLATFORMS["plan"][0] and group.kind == mc.ModelInstanceGroup.KIND_CPU:
            problems.append("a tensorrt_plan model cannot have KIND_CPU instances")
    return problems


def _version_problems(config: Any, model_dir: Path) -> list[str]:
    kind = next((k for k, (p, _) in PLATFORMS.items() if p == config.platform), None)
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        return ["no numbered version folder"]
    if kind is None:
        return []
    problems = []
    filename = config.default_model_filename or PLATFORMS[kind][1]
    for version in versions:
        file = version / filename
        if not file.is_file():
            problems.append(f"version {version.name} has no {filename}")
            continue
        try:
            art = inspect_artifact(file)
        except InputError as exc:
            problems.append(f"version {version.name}: {exc}")
            continue
        problems += [f"version {version.name}: {p}" for p in _agreement_problems(config, art)]
    return problems


def _agreement_problems(config: Any, art: Artifact) -> list[str]:
    """Does the config describe this artefact: tensors, dims, and a batch the profile can run?"""
    mb = config.max_batch_size
    lead = (art.static_batch,) if mb == 0 and art.static_batch else ((-1,) if mb == 0 else ())
    problems = []
    for declared, actual in ((config.input, art.inputs), (config.output, art.outputs)):
        want = {t.name: (*lead, *t.dims) for t in actual}
        got = {t.name: tuple(t.dims) for t in declared}
        if want != got:
            problems.append(f"tensors {got} do not match the model's {want}")
    if art.static_batch is not None and mb != 0:
        problems.append(f"max_batch_size {mb} but the graph has a fixed batch of {art.static_batch}")
    if art.profile is not None and mb > 0:
        lo, _, hi = art.profile
        if mb > hi:
            problems.append(f"max_batch_size {mb} exceeds the batch profile max {hi}")
        if lo > 1:
            problems.append(f"the batch profile starts at {lo}, but Triton sends batches from 1")
    return problems
