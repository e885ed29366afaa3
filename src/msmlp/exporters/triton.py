"""Triton Inference Server model repository for an exported model: scale out on a server that exists.

Layout written (Triton's convention)::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/labels.txt              (the export's --labels, or ImageNet's for 1000 classes)
    <repo>/<name>/<version>/model.onnx    (+ external weight files)  or  model.plan
    <repo>/<name>/<version>/model.plan.json   (a plan's sidecar, so the copy can be validated)

The artefact is read through :func:`msmlp.artifacts.read_artifact` (I/O, batch profile, model name);
``config.pbtxt`` is built and checked by :mod:`msmlp.exporters.triton_config` with Triton's own schema.
``max_batch_size`` comes from the batch profile and may not exceed it: Triton would otherwise send
batches the engine rejects. ONNX runs on ONNX Runtime (``onnxruntime``, CPU or GPU) or on Triton's
OpenVINO backend (``openvino``, CPU); a plan on TensorRT (GPU).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from msmlp.artifacts import ArtifactInfo, load_onnx_header, plan_sidecar_path, read_artifact
from msmlp.errors import InputError, MsmlpError
from msmlp.exporters.triton_config import (
    KINDS,
    TARGETS,
    Target,
    agreement_problems,
    build_config,
    config_problems,
    model_config_schema,
    parse_text,
    static_batch,
    target_for,
    to_text,
    triton_type,
)
from msmlp.fileio import atomic_path, write_text_atomic
from msmlp.log import logger

__all__ = ["TARGETS", "model_config_schema", "validate_repository", "write_repository"]


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
    target: str | None = None,
) -> Path:
    """Write ``<repo>/<name>`` for an ONNX file or a TensorRT plan; returns the model folder.

    ``target``: ``onnxruntime`` (default for ONNX), ``openvino`` (ONNX on CPU) or ``tensorrt`` (a plan).
    Everything is checked before anything is written; files are written atomically, ``config.pbtxt``
    last, and the result is re-read by :func:`validate_repository`.
    """
    given = [(k, v) for k, v in (("onnx", onnx), ("engine", engine)) if v is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one of --onnx or --engine (got {[k for k, _ in given] or 'none'})")
    repo = Path(repo)
    _check_repo(repo)
    art = read_artifact(given[0][1])
    chosen = _target(art, target, kind)
    extra = _external_files(art)
    name = name or _default_name(art)
    _check_options(art, name, version, queue_delay_us, instances)
    mb = _max_batch_size(art, max_batch)
    sizes = _preferred_sizes(art, mb, preferred)
    labels = _has_class_names(art)
    config = build_config(art, chosen, name, mb, sizes, queue_delay_us, instances, kind, labels)
    text = to_text(config)
    model_dir = repo / name
    _write_files(art, chosen, extra, model_dir, version, text, with_labels=labels)
    validate_repository(model_dir)
    logger.info("wrote Triton model %r (%s, max_batch_size %d) to %s", name, chosen.name, mb, model_dir)
    return model_dir


def _check_repo(repo: Path) -> None:
    """The repository is a folder (or will be): a file anywhere on the path is one clear error."""
    for path in (repo, *repo.parents):
        if path.exists():
            if not path.is_dir():
                raise InputError(
                    f"--repo {str(repo)!r}: {str(path)!r} is a file, not a folder; give the model "
                    "repository's folder (created if needed)"
                )
            return


def _target(art: ArtifactInfo, requested: str | None, kind: str) -> Target:
    if kind not in KINDS:
        raise InputError(f"instance kind {kind!r} is not one of {list(KINDS)}")
    name = requested or ("tensorrt" if art.kind == "plan" else "onnxruntime")
    if name not in TARGETS:
        raise InputError(f"Triton target {name!r} is not one of {sorted(TARGETS)}")
    target = TARGETS[name]
    if target.kind != art.kind:
        what = "a TensorRT plan" if art.kind == "plan" else "an ONNX graph"
        raise InputError(f"Triton's {name} backend cannot run {what} ({str(art.path)!r})")
    if kind not in target.instance_kinds:
        if art.kind == "plan":
            raise InputError(
                "a TensorRT plan runs only on a GPU; use --kind gpu (or export ONNX for CPU instances)"
            )
        raise InputError(
            f"Triton's {name} backend runs on {', '.join(target.instance_kinds)} only; use --kind cpu"
        )
    return target


def _external_files(art: ArtifactInfo) -> tuple[Path, ...]:
    """The external weight files an ONNX graph names (they are copied beside it); all must exist."""
    if art.kind != "onnx":
        return ()
    import onnx

    found: list[Path] = []
    for init in load_onnx_header(art.path).graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in init.external_data if e.key == "location"), None)
            if location and (art.path.parent / location) not in found:
                found.append(art.path.parent / location)
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise InputError(
            f"{str(art.path)!r} keeps its weights in {missing}, which do not exist; copy them beside it"
        )
    return tuple(found)


def _default_name(art: ArtifactInfo) -> str:
    if art.model:
        return art.model
    return art.path.stem if art.path.stem != "model" else art.path.resolve().parent.name


def _check_options(art: ArtifactInfo, name: str, version: int, queue_delay_us: int, instances: int) -> None:
    if not name or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in name) or name.startswith("."):
        raise InputError(f"model name {name!r} must be ASCII letters, digits, '_', '.', '-' (pass --name)")
    if not isinstance(version, int) or version < 1:
        raise InputError(f"version must be an integer >= 1 (Triton's numbered folders), got {version!r}")
    if queue_delay_us < 0:
        raise InputError(f"queue delay must be >= 0 microseconds, got {queue_delay_us}")
    if instances < 1:
        raise InputError(f"instance count must be >= 1, got {instances}")
    bad = [t.name for t in (*art.inputs, *art.outputs) if triton_type(t.dtype) == "INVALID" or not t.shape]
    if bad:
        raise InputError(
            f"tensors {bad} of {str(art.path)!r} have a type or shape Triton's config cannot express"
        )


def _max_batch_size(art: ArtifactInfo, requested: int | None) -> int:
    fixed = static_batch(art)
    if fixed is not None:
        if requested not in (None, 0):
            raise InputError(
                f"{str(art.path)!r} has a fixed batch of {fixed}, so Triton cannot batch it "
                f"(--max-batch {requested}); re-export with a dynamic batch axis"
            )
        return 0
    if requested is not None and requested < 1:
        raise InputError(f"--max-batch must be >= 1, got {requested}")
    if art.batch is None:
        if art.kind == "plan":
            raise InputError(
                f"metadata for {str(art.path)!r} has no batch profile ('profile': [min, opt, max])"
            )
        if requested is None:
            raise InputError(
                f"{str(art.path)!r} has no metadata with a batch profile (model.json 'batch'); pass --max-batch N"
            )
        return requested
    lo, _, hi = art.batch
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


def _preferred_sizes(art: ArtifactInfo, max_batch: int, preferred: list[int] | None) -> list[int]:
    if max_batch == 0:
        if preferred:
            raise InputError("preferred batch sizes need a batching model (max_batch_size > 0)")
        return []
    if preferred is None:
        opt = art.batch[1] if art.batch else max_batch
        return sorted({min(opt, max_batch), max_batch})
    bad = [p for p in preferred if not 1 <= p <= max_batch]
    if bad:
        raise InputError(f"preferred batch sizes {bad} are outside 1..max_batch_size ({max_batch})")
    return sorted(set(preferred))


def _has_class_names(art: ArtifactInfo) -> bool:
    """One class-score output with names for it: the export's own labels, or ImageNet's 1000."""
    if len(art.outputs) != 1 or len(art.outputs[0].shape) != 2:
        return False
    classes = art.outputs[0].shape[1]
    labels = art.config.labels if art.config else ()
    return classes == 1000 or (bool(labels) and len(labels) == classes)


def _write_files(
    art: ArtifactInfo,
    target: Target,
    extra: tuple[Path, ...],
    model_dir: Path,
    version: int,
    text: str,
    with_labels: bool,
) -> None:
    version_dir = model_dir / str(version)
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {str(version_dir)!r}: {exc.strerror or exc}") from exc
    _copy_atomic(art.path, version_dir / target.filename)
    for file in extra:
        relative = file.relative_to(art.path.parent)
        if ".." in relative.parts:
            raise InputError(f"external data {str(file)!r} lies outside the model's folder")
        (version_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        _copy_atomic(file, version_dir / relative)
    if art.kind == "plan":
        _copy_atomic(plan_sidecar_path(art.path), plan_sidecar_path(version_dir / target.filename))
    if with_labels:
        from msmlp.data.labels import class_names

        labels = art.config.labels if art.config else ()
        names = class_names(art.outputs[0].shape[1], labels)
        write_text_atomic(model_dir / "labels.txt", "\n".join(names) + "\n")
    write_text_atomic(model_dir / "config.pbtxt", text)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


# -- validation --------------------------------------------------------------------------------------
def validate_repository(path: str | Path, name: str | None = None) -> object:
    """Parse ``config.pbtxt`` with Triton's schema and check it against the files; returns the
    ``ModelConfig``. ``path`` is a model folder, or a repository (then ``name`` or its only model)."""
    model_dir = _model_dir(Path(path), name)
    config_file = model_dir / "config.pbtxt"
    config = parse_text(config_file.read_text(encoding="utf-8"), str(config_file))
    problems = config_problems(config, model_dir) + _version_problems(config, model_dir)
    if problems:
        raise InputError(f"Triton model {str(model_dir)!r} is not valid: " + "; ".join(problems))
    return config


def _model_dir(path: Path, name: str | None) -> Path:
    if name is not None:
        path = path / name
    if (path / "config.pbtxt").is_file():
        return path
    models = sorted(path.glob("*/config.pbtxt")) if path.is_dir() else []
    if len(models) == 1:
        return models[0].parent
    found = [p.parent.name for p in models]
    raise InputError(
        f"{str(path)!r} is not a Triton model folder (no config.pbtxt)"
        + (f"; it holds models {found}: pass the name" if found else "")
    )


def _version_problems(config: object, model_dir: Path) -> list[str]:
    target = target_for(config)
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        return ["no numbered version folder"]
    if target is None:
        return []
    problems = []
    filename = config.default_model_filename or target.filename  # type: ignore[attr-defined]
    for version in versions:
        file = version / filename
        if not file.is_file():
            problems.append(f"version {version.name} has no {filename}")
            continue
        try:
            art = read_artifact(file)
            _external_files(art)
        except MsmlpError as exc:
            problems.append(f"version {version.name}: {exc}")
            continue
        problems += [f"version {version.name}: {p}" for p in agreement_problems(config, art)]
    return problems
