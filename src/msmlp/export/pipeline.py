"""``msmlp-export``: registered model -> checked, verified ONNX (FP32, optionally FP16 / INT8) -> engine.

Every artefact is written under a hidden staging name, checked and verified against PyTorch FP32,
and only then moved to its final name (``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx``) and
listed in ``model.json``; a failure leaves the verification report and nothing half-made. The
precision and engine modules are imported inside their steps, so the FP32 export works without them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch.nn as nn

from msmlp.errors import ExportError, InputError, MsmlpError
from msmlp.export.check import CheckReport, check_graph
from msmlp.export.onnx import DEFAULT_OPSET, check_batch, check_opset, export_onnx
from msmlp.fileio import atomic_path
from msmlp.log import logger
from msmlp.models.registry import DeployConfig
from msmlp.runtime.ort import file_sha256
from msmlp.verify import VerifyReport, format_cosine, format_top1

FORMAT = "msmlp-export/1"
CALIB_METHODS = ("max", "entropy")
VERIFY_BATCH = 8
TENSORRT_MISSING = "TensorRT is not installed (pip install 'msmlp[tensorrt]' on a machine with an NVIDIA GPU)"
FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@dataclass(frozen=True)
class ExportOptions:
    """What ``msmlp-export`` was asked to do; ``None`` means the default."""

    model: str
    weights: Path | None = None
    out: Path | None = None
    batch: tuple[int, int, int] | None = None
    opset: int = DEFAULT_OPSET
    images: Path | None = None  # verification images; default: the built-in sample photos
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None  # calibration images; default: the built-in sample photos
    calib_size: int = 32
    calib_method: str = "max"
    keep_fp32: tuple[str, ...] = ()
    engine: bool = False  # require the TensorRT engine step
    workspace_gib: float = 4.0
    opt_level: int = 3
    timing_cache: Path | None = None
    plugins: tuple[Path, ...] = ()
    seed: int = 0


@dataclass
class ExportResult:
    out: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, VerifyReport] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def default_batch(config: DeployConfig) -> tuple[int, int, int]:
    """The config's min/max batch with OPT = 8 (clamped into the range)."""
    lo, hi = config.min_batch, config.max_batch
    return lo, min(max(VERIFY_BATCH, lo), hi), hi


def check_options(opts: ExportOptions) -> ExportOptions:
    """Validate everything that can be validated before spending minutes on an export."""
    from msmlp.models.registry import get_config

    config = get_config(opts.model)  # unknown model: one clear line
    check_opset(opts.opset)
    batch = check_batch(opts.batch) if opts.batch is not None else default_batch(config)
    if opts.calib_method not in CALIB_METHODS:
        raise InputError(f"--calib-method {opts.calib_method!r} is not one of {', '.join(CALIB_METHODS)}")
    if isinstance(opts.calib_size, bool) or not isinstance(opts.calib_size, int) or opts.calib_size < 1:
        raise InputError(f"--calib-size {opts.calib_size!r} must be a positive integer")
    if not opts.workspace_gib > 0:
        raise InputError(f"--workspace {opts.workspace_gib!r} must be a positive number of GiB")
    if not 0 <= opts.opt_level <= 5:
        raise InputError(
            f"--opt-level {opts.opt_level!r} must be in 0..5 (TensorRT builder optimisation level)"
        )
    for label, path in (("--weights", opts.weights), *(("--plugin", p) for p in opts.plugins)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{label} {str(path)!r} does not exist or is not a file")
    for label, path in (("--images", opts.images), ("--calib", opts.calib)):
        if path is not None and not Path(path).is_dir():
            raise InputError(f"{label} {str(path)!r} is not a folder of images")
    if opts.engine:
        available, reason = tensorrt_status()
        if not available:
            raise ExportError(f"--engine was given but the engine cannot be built: {reason}")
    return replace(opts, batch=batch)


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason) from the engine module; a missing or broken module counts as not installed."""
    try:
        from msmlp.export.engine import tensorrt_available

        return tensorrt_available()
    except Exception as exc:  # a broken engine module must not break the ONNX export
        return False, f"{TENSORRT_MISSING} [engine module: {type(exc).__name__}: {exc}]"


# --------------------------------------------------------------------------------------- progress


class Progress:
    """Step lines on the log: ``[2/6] export ONNX (opset 17)`` then the outcome and time."""

    def __init__(self, total: int) -> None:
        self.total, self.index = total, 0
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, key: str, title: str) -> Iterator[dict[str, str]]:
        self.index += 1
        prefix = f"[{self.index}/{self.total}]"
        logger.info("%s %s ...", prefix, title)
        outcome: dict[str, str] = {}
        start = time.perf_counter()
        yield outcome
        self.timings[key] = round(time.perf_counter() - start, 2)
        detail = f"{outcome['detail']} " if outcome.get("detail") else ""
        logger.info("%s %s(%.1f s)", " " * len(prefix), detail, self.timings[key])


def count_steps(opts: ExportOptions) -> int:
    return 4 + 2 * opts.fp16 + 3 * opts.int8 + 1


# ------------------------------------------------------------------------------------------ steps


def run_export(options: ExportOptions) -> ExportResult:
    """Export, check, verify and write the artefacts in ``options.out`` (default ``out/<model>``)."""
    opts = check_options(options)
    out = Path(opts.out or Path("out") / opts.model)
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out=out)
    progress = Progress(count_steps(opts))
    with progress.step("build", f"build {opts.model}") as step:
        model, config, weights = build_model(opts)
        step["detail"] = (
            f"synthetic weights, seed {opts.seed}"
            if weights["source"] == "synthetic"
            else "checkpoint loaded"
        )
    meta = base_metadata(opts, config, weights)
    result.metadata = meta
    export_fp32(opts, model, config, out, progress, result)
    if opts.fp16:
        export_fp16(opts, model, config, out, progress, result)
    if opts.int8:
        export_int8(opts, model, config, out, progress, result)
    engine_step(opts, model, config, out, progress, result)
    meta["timings_s"] = progress.timings
    write_metadata(out, meta)
    return result


def build_model(opts: ExportOptions) -> tuple[nn.Module, DeployConfig, dict[str, Any]]:
    """The registered model with its checkpoint, or with synthetic weights in which every block contributes."""
    from msmlp.models.registry import create_model, get_config
    from msmlp.models.weights import make_contributing

    config = get_config(opts.model)
    if opts.weights is not None:
        path = Path(opts.weights).resolve()
        model = create_model(opts.model, pretrained=str(path))
        return model, config, {"source": "checkpoint", "path": str(path), "sha256": file_sha256(path)}
    model = make_contributing(create_model(opts.model), seed=opts.seed)
    logger.info(
        "no --weights given: using synthetic weights (seed %d) in which every block contributes; the graph "
        "and parity checks are real but predictions are meaningless; pass --weights CHECKPOINT for a real model",
        opts.seed,
    )
    return model, config, {"source": "synthetic", "seed": opts.seed}


def export_fp32(
    opts: ExportOptions,
    model: nn.Module,
    config: DeployConfig,
    out: Path,
    progress: Progress,
    result: ExportResult,
) -> None:
    final = out / FILES["fp32"]
    with staged(final) as stage:
        with progress.step(
            "export", f"export ONNX (opset {opts.opset}, batch {_profile(opts.batch)})"
        ) as step:
            export_onnx(
                model, stage, config=config, opset=opts.opset, batch=opts.batch, model_name=opts.model
            )
            step["detail"] = f"{stage.stat().st_size / 1e6:.1f} MB"
        with progress.step("check", "check graph for TensorRT / ONNX Runtime") as step:
            check = check_graph(stage)
            step["detail"] = check.summary()
        with progress.step("verify_fp32", "verify FP32 against PyTorch") as step:
            report = verify_artifact(opts, model, config, stage, final, "fp32", verification_images(opts), "")
            step["detail"] = _verdict(report)
        commit(stage, final, "fp32", result, check=check, report=report)
    result.metadata["check"] = check.to_dict()
    write_metadata(out, result.metadata)


def export_fp16(
    opts: ExportOptions,
    model: nn.Module,
    config: DeployConfig,
    out: Path,
    progress: Progress,
    result: ExportResult,
) -> None:
    from msmlp.export.precision import convert_fp16

    reduced_precision_step(
        opts,
        model,
        config,
        out,
        progress,
        result,
        "fp16",
        convert=(
            "convert to FP16 (ModelOpt AutoCast)",
            lambda stage: convert_fp16(result.artifacts["fp32"], stage, keep_fp32=opts.keep_fp32),
        ),
        verify=("verify FP16 against PyTorch FP32", verification_images(opts), ""),
    )


def export_int8(
    opts: ExportOptions,
    model: nn.Module,
    config: DeployConfig,
    out: Path,
    progress: Progress,
    result: ExportResult,
) -> None:
    from msmlp.export.calibration import calibration_batch
    from msmlp.export.quantize import quantize_int8

    calib_files, held_out, note = int8_image_split(opts)
    with progress.step(
        "calibrate", f"calibration batch ({opts.calib_size} inputs, {len(calib_files)} images)"
    ) as step:
        cache = out / f"calib_{opts.calib_size}_{calibration_key(config, calib_files, opts)}.npy"
        calib = calibration_batch(config, calib_files, opts.calib_size, seed=opts.seed, cache=cache)
        step["detail"] = f"cached in {cache.name}"
    calibration = {
        "files": [f.name for f in calib_files],
        "sha256": [file_sha256(f) for f in calib_files],
        "cache": cache.name,
        "note": note,
    }

    def quantize(stage: Path) -> dict:
        info = quantize_int8(
            result.artifacts["fp32"], stage, calib, method=opts.calib_method, keep_fp32=opts.keep_fp32
        )
        return {**info, "calibration": calibration}

    reduced_precision_step(
        opts,
        model,
        config,
        out,
        progress,
        result,
        "int8",
        convert=(f"quantize to INT8 (ModelOpt, {opts.calib_method} calibration)", quantize),
        verify=("verify INT8 against PyTorch FP32 on held-out images", held_out, note),
    )


def reduced_precision_step(
    opts: ExportOptions,
    model: nn.Module,
    config: DeployConfig,
    out: Path,
    progress: Progress,
    result: ExportResult,
    precision: str,
    *,
    convert: tuple[str, Callable[[Path], dict]],
    verify: tuple[str, Sequence[Path], str],
) -> None:
    """Convert the FP32 graph into a staged file, check it, verify it against PyTorch FP32 on the given
    images, and only then move it into place and record it in the metadata."""
    final = out / FILES[precision]
    (convert_title, convert_fn), (verify_title, images, note) = convert, verify
    with staged(final) as stage:
        with progress.step(precision, convert_title) as step:
            info = convert_fn(stage)
            check = check_graph(stage)
            step["detail"] = check.summary()
        with progress.step(f"verify_{precision}", verify_title) as step:
            report = verify_artifact(opts, model, config, stage, final, precision, images, note)
            step["detail"] = _verdict(report)
        commit(stage, final, precision, result, check=check, report=report, info=info)
    write_metadata(out, result.metadata)


def engine_step(
    opts: ExportOptions,
    model: nn.Module,
    config: DeployConfig,
    out: Path,
    progress: Progress,
    result: ExportResult,
) -> None:
    """Build a TensorRT plan for each reduced-precision graph (or the FP32 one), where TensorRT is usable."""
    with progress.step("engine", "TensorRT engine") as step:
        available, reason = tensorrt_status()
        if not available:
            if opts.engine:
                raise ExportError(f"--engine was given but the engine cannot be built: {reason}")
            logger.info("engine step skipped: %s", reason or TENSORRT_MISSING)
            step["detail"] = "skipped"
            return
        from msmlp.export.engine import build_engine

        wanted = [p for p in ("int8", "fp16") if p in result.artifacts] or ["fp32"]
        for precision in wanted:
            plan = out / FILES[precision].replace(".onnx", ".plan")
            info = build_engine(
                result.artifacts[precision],
                plan,
                batch=opts.batch,  # type: ignore[arg-type]
                input_name=config.input_name,
                input_shape=tuple(config.input_size),
                workspace_gib=opts.workspace_gib,
                opt_level=opts.opt_level,
                timing_cache=opts.timing_cache,
                plugins=opts.plugins,
                metadata={"model": opts.model, "precision": precision},
            )
            try:
                report = verify_engine(opts, model, config, plan, precision)
            except MsmlpError:  # a plan that failed verification is not an artefact; its report stays
                plan.unlink(missing_ok=True)
                plan.with_name(plan.name + ".json").unlink(missing_ok=True)
                raise
            result.artifacts[f"{precision}_engine"] = plan
            result.reports[f"{precision}_engine"] = report
            result.metadata["artifacts"][plan.name] = {
                "precision": precision,
                "sha256": file_sha256(plan),
                "bytes": plan.stat().st_size,
                "info": info,
                "verification": report.summary(),
            }
        step["detail"] = ", ".join(out.joinpath(FILES[p].replace(".onnx", ".plan")).name for p in wanted)


# ------------------------------------------------------------------------------------ verification


def verify_artifact(
    opts: ExportOptions,
    model: nn.Module,
    config: DeployConfig,
    stage: Path,
    final: Path,
    precision: str,
    images: Sequence[Path],
    note: str,
) -> VerifyReport:
    """Verify the staged graph on ONNX Runtime CPU; the report is written (under the final name)
    before a broken tolerance raises."""
    from msmlp.runtime.ort import OnnxRuntimeBackend
    from msmlp.runtime.torch_backend import TorchBackend
    from msmlp.verify import verify

    candidate = OnnxRuntimeBackend(stage)
    with TorchBackend(model, config=config) as reference, candidate:
        lo, _, hi = opts.batch  # type: ignore[misc]
        candidate.batch_range = (lo, hi)  # the staged file has no model.json yet
        report = verify(
            reference,
            candidate,
            images,
            precision,
            verify_batch_sizes(opts.batch),  # type: ignore[arg-type]
            config=config,
            seed=opts.seed,
            note=note,
            raise_on_failure=False,
        )
    report.candidate["file"] = final.name
    return finish_report(report, final.parent / f"verify_{precision}.json")


def verify_engine(
    opts: ExportOptions, model: nn.Module, config: DeployConfig, plan: Path, precision: str
) -> VerifyReport:
    from msmlp.runtime.torch_backend import TorchBackend
    from msmlp.runtime.trt import TensorRTBackend
    from msmlp.verify import verify

    images = verification_images(opts) if precision != "int8" else int8_image_split(opts)[1]
    with (
        TorchBackend(model, config=config) as reference,
        TensorRTBackend(plan, expected_model=opts.model) as candidate,
    ):
        report = verify(
            reference,
            candidate,
            images,
            precision,
            verify_batch_sizes(opts.batch),  # type: ignore[arg-type]
            config=config,
            seed=opts.seed,
            raise_on_failure=False,
        )
    return finish_report(report, plan.parent / f"verify_{precision}_engine.json")


def finish_report(report: VerifyReport, path: Path) -> VerifyReport:
    """Write the report, print its table, then raise VerificationError if a tolerance broke."""
    from msmlp.verify import write_report

    write_report(report, path)
    for line in report.table().splitlines():
        logger.info("    %s", line)
    report.raise_if_failed(path)
    return report


def verify_batch_sizes(batch: Sequence[int]) -> list[int]:
    """Batch 1 and 8, moved into the profile (e.g. 4 and 8 for 4,8,16; 1 and 4 for 1,2,4)."""
    lo, _, hi = batch
    return sorted({lo, min(max(VERIFY_BATCH, lo), hi)})


def verification_images(opts: ExportOptions) -> list[Path]:
    from msmlp.data.transforms import builtin_images, list_images

    return list_images(opts.images) if opts.images else builtin_images()


def int8_image_split(opts: ExportOptions) -> tuple[list[Path], list[Path], str]:
    """Calibration images and held-out verification images, never the same content.

    When the verification set is (a subset of) the calibration set, as with the default built-in
    photos for both, the sorted calibration files are split: the first ceil(n/2) calibrate, the rest
    verify. Otherwise verification images whose content also appears in the calibration set are dropped.
    """
    from msmlp.data.transforms import builtin_images, list_images

    calib = list_images(opts.calib) if opts.calib else builtin_images()
    verify_files = verification_images(opts)
    calib_hashes = {file_sha256(p) for p in calib}
    verify_hashes = {file_sha256(p): p for p in verify_files}
    if set(verify_hashes) <= calib_hashes:
        ordered = sorted(calib, key=lambda p: p.name)
        cut = math.ceil(len(ordered) / 2)
        calib, held = ordered[:cut], ordered[cut:]
        note = (
            f"INT8 held-out split: verification images are also calibration images, so the first {cut} of "
            f"{len(ordered)} sorted files calibrate ({_names(calib)}) and the rest verify ({_names(held)})"
        )
    else:
        held = [p for h, p in verify_hashes.items() if h not in calib_hashes]
        dropped = len(verify_files) - len(held)
        note = f"INT8 held-out images: {_names(held)}" + (
            f"; {dropped} verification image(s) also used for calibration were left out" if dropped else ""
        )
    if not held:
        raise InputError(
            "no held-out images left to verify the INT8 graph (every verification image is a calibration "
            "image); pass --images DIR with other images, or a --calib folder with at least 2 images"
        )
    return calib, sorted(held, key=lambda p: p.name), note


def calibration_key(config: DeployConfig, files: Sequence[Path], opts: ExportOptions) -> str:
    """Short hash of what the calibration batch depends on (image contents, size, seed, preprocessing)."""
    digest = hashlib.sha256()
    for p in sorted(files, key=lambda p: p.name):
        digest.update(file_sha256(p).encode())
    pre = (config.input_size, config.mean, config.std, config.interpolation, config.crop_pct)
    digest.update(repr((opts.calib_size, opts.seed, pre)).encode())
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------------------------ artefacts


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A hidden staging path beside ``final``; deleted on failure (and after a successful commit)."""
    stage = final.with_name(f".{final.stem}.unverified{final.suffix}")
    try:
        yield stage
    finally:
        stage.unlink(missing_ok=True)
        stage.with_name(stage.name + ".data").unlink(missing_ok=True)


def commit(
    stage: Path,
    final: Path,
    precision: str,
    result: ExportResult,
    *,
    check: CheckReport,
    report: VerifyReport,
    info: dict[str, Any] | None = None,
) -> None:
    """Move a verified graph to its final name and list it in the metadata."""
    import os

    os.replace(stage, final)
    result.artifacts[precision] = final
    result.reports[precision] = report
    entry: dict[str, Any] = {
        "precision": precision,
        "sha256": file_sha256(final),
        "bytes": final.stat().st_size,
        "nodes": check.node_count,
        "op_counts": check.op_counts,
        "report": f"verify_{precision}.json",
        "verification": report.summary(),
    }
    if info:
        entry["info"] = info
    result.metadata["artifacts"][final.name] = entry
    result.metadata["verification"][precision] = report.summary()
    if precision == "fp32":
        result.metadata["onnx"] = {"file": final.name, "sha256": entry["sha256"], "bytes": entry["bytes"]}


def base_metadata(opts: ExportOptions, config: DeployConfig, weights: dict[str, Any]) -> dict[str, Any]:
    batch_axis = "batch"
    return {
        "format": FORMAT,
        "model": opts.model,
        "family": config.family,
        "config": config.to_dict(),
        "weights": weights,
        "opset": opts.opset,
        "batch": list(opts.batch or ()),
        "input": {"name": config.input_name, "shape": [batch_axis, *config.input_size], "dtype": "float32"},
        "output": {"name": config.output_name, "shape": [batch_axis, config.num_classes], "dtype": "float32"},
        "artifacts": {},
        "verification": {},
        "versions": versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_metadata(out: Path, meta: dict[str, Any]) -> Path:
    path = out / "model.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for dist in ("msmlp", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "onnxslim", "nvidia-modelopt"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _verdict(report: VerifyReport) -> str:
    s = report.summary()
    state = "passed" if s["passed"] else "FAILED"
    return f"{state}: cosine {format_cosine(s['cosine'])}, max rel {s['max_rel']:.2e}, {format_top1(s)}"


def _profile(batch: Sequence[int] | None) -> str:
    return ",".join(map(str, batch or ()))


def _names(paths: Sequence[Path]) -> str:
    return ", ".join(p.name for p in paths)
