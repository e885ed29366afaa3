"""``msmlp-export`` from start to end: check the options, build the model, open ``model.json``
(:class:`msmlp.manifest.Manifest`), run the planned steps (:mod:`.steps`) and record their timings.
A re-run reuses an identical verified ``model.onnx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msmlp.artifacts import ONNX_FILES
from msmlp.manifest import Manifest
from msmlp.models.config import DeployConfig
from msmlp.pipeline.images import verification_images
from msmlp.pipeline.options import ExportOptions, check_options, deploy_config
from msmlp.pipeline.progress import Progress
from msmlp.pipeline.state import ExportResult, RunState, open_manifest
from msmlp.pipeline.steps import backend_steps, engine_step, export_fp32, fp16_step, int8_step
from msmlp.pipeline.verification import backend_verifications

__all__ = ["ExportResult", "plan_steps", "run_export"]


def run_export(options: ExportOptions) -> ExportResult:
    """Export, check, verify and write the artefacts in ``options.out`` (default ``out/<model>``)."""
    from msmlp.models.weights import load_for_deploy

    opts = check_options(options)
    if opts.features:
        from msmlp.pipeline.features import run_feature_export

        return run_feature_export(opts)
    out = opts.out_dir
    result = ExportResult(out=out)
    model = load_for_deploy(opts.model, opts.weights, opts.seed, config=deploy_config(opts))
    config: DeployConfig = model.deploy_config
    if opts.val is not None:  # the labels fit this model's head, before any export work
        from msmlp.pipeline.accuracy import open_val

        open_val(opts.val, config).check_classes(config.num_classes, opts.model)
    manifest = open_manifest(opts, model)
    result.manifest = manifest
    reuse = opts.reuse and _reusable_fp32(manifest, opts)
    run = RunState(opts, model, config, manifest, Progress(plan_steps(opts, reuse)), result)
    with run.progress.step("build", f"build {opts.model}") as step:
        step["detail"] = _weights_text(model.weights_info)
    export_fp32(run, reuse)
    backend_steps(run, "fp32", verification_images(opts.images))
    if opts.fp16:
        fp16_step(run)
    if opts.int8:
        int8_step(run)
    engine_step(run)
    manifest.record_timings(run.progress.timings)
    manifest.record_skipped(result.skipped)
    manifest.write()
    return result


def plan_steps(opts: ExportOptions, reuse: bool) -> list[str]:
    """The step keys in order; the progress total is their count."""

    def on_backends(graph: str) -> list[str]:
        return [f"verify_{check.key}" for _, check in backend_verifications(opts, graph)]

    steps = ["build", *(["reuse"] if reuse else ["export", "check", "verify_fp32"]), *on_backends("fp32")]
    steps += ["fp16", "verify_fp16", *on_backends("fp16")] if opts.fp16 else []
    gate = ["accuracy_int8"] if opts.val is not None else []
    steps += ["calibrate", "int8", "verify_int8", *gate, *on_backends("int8")] if opts.int8 else []
    return [*steps, "engine"]


def _reusable_fp32(manifest: Manifest, opts: ExportOptions) -> bool:
    """``Manifest.open`` kept the entry only if the file, hash, model, weights, opset and profile match."""
    entry = manifest.entry(ONNX_FILES["fp32"])
    verified = (entry or {}).get("verification") or {}
    return bool(entry and verified.get("passed") and entry.get("shift", "slice") == opts.shift)


def _weights_text(weights: dict[str, Any]) -> str:
    if weights.get("source") == "synthetic":
        return f"synthetic weights, seed {weights.get('seed', 0)}"
    return f"checkpoint {Path(str(weights.get('path'))).name}"
