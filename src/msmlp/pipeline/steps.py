"""The export steps: FP32 export and check, each graph on the backends the table lists, FP16, INT8, the engine.
Each converts into a staged file (:mod:`.staging`), checks it and verifies it (:mod:`.verification`)
before it is committed; :mod:`.run` decides which steps run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from msmlp.artifacts import ONNX_FILES
from msmlp.errors import ExportError, MissingDependencyError, MsmlpError
from msmlp.exporters.check import check_graph
from msmlp.log import logger
from msmlp.pipeline.images import calibration_key, int8_image_split, verification_images
from msmlp.pipeline.options import TENSORRT_MISSING, tensorrt_status
from msmlp.pipeline.staging import commit, staged
from msmlp.pipeline.state import RunState
from msmlp.pipeline.stdout_capture import quiet_stdout
from msmlp.pipeline.verification import (
    backend_verifications,
    usable_hint,
    verify_engine,
    verify_on,
    verify_onnx,
)
from msmlp.verify import VerifyReport


def export_fp32(run: RunState, reuse: bool) -> None:
    from msmlp.exporters.onnx import export_onnx

    opts, final = run.opts, run.out / ONNX_FILES["fp32"]
    if reuse:
        with run.progress.step(
            "reuse", f"reuse {final.name} (same model, weights, opset and profile)"
        ) as step:
            step["detail"] = "verified earlier, hash unchanged"
        run.result.artifacts["fp32"] = final
        run.result.reused.append(final.name)
        return
    with staged(final) as stage:
        profile = ",".join(map(str, opts.batch or ()))
        with run.progress.step(
            "export", f"export ONNX (opset {opts.opset}, batch {profile}, shifts {opts.shift})"
        ) as step:
            export_onnx(
                run.model,
                stage,
                config=run.config,
                opset=opts.opset,
                batch=opts.batch,
                model_name=opts.model,
                shift=opts.shift,
            )
            step["detail"] = f"{stage.stat().st_size / 1e6:.1f} MB"
        with run.progress.step("check", "check graph for TensorRT / ONNX Runtime") as step:
            check = check_graph(stage, extra_ops=_plugin_ops(opts.shift))
            step["detail"] = check.summary()
        with run.progress.step("verify_fp32", "verify FP32 against PyTorch (ONNX Runtime CPU)") as step:
            report = verify_onnx(run, stage, final, "fp32", verification_images(opts.images), "")
            step["detail"] = verdict(report)
        commit(run, stage, final, "fp32", check, report, {"shift": opts.shift})


def backend_steps(run: RunState, graph: str, images: Sequence[Path], note: str = "") -> None:
    """Verify the committed ``graph`` on each backend the table lists a verification for (OpenVINO's
    BF16 and INT8 paths, the candidates ``--backend auto`` prefers). Skipped, and said, where the backend
    or the CPU cannot; a failure is recorded (so ``--backend auto`` never picks it) and only fails the
    export for a BF16 verification that ``--bf16`` asked for."""
    for spec, check in backend_verifications(run.opts, graph):
        with run.progress.step(f"verify_{check.key}", check.title) as step:
            ok, hint, why = usable_hint(spec, check, run.opts)
            if not ok:
                if check.bf16 and run.opts.bf16:
                    raise MissingDependencyError(f"--bf16 was given but BF16 cannot run here: {why}")
                run.result.skipped[check.key] = why
                step["detail"] = f"skipped: {why}"
                continue
            report = verify_on(run, spec, check, run.out / ONNX_FILES[graph], images, hint, note)
            required = check.bf16 and bool(run.opts.bf16)
            _record_variant(run, check.key, report, hint or "f32", required=required)
            step["detail"] = verdict(report)


def _record_variant(run: RunState, key: str, report: VerifyReport, hint: str, *, required: bool) -> None:
    run.result.reports[key] = report
    run.manifest.record_verification(key, {**report.summary(), "hint": hint, "report": f"verify_{key}.json"})
    run.manifest.write()
    if not report.passed:
        if required:
            report.raise_if_failed(run.out / f"verify_{key}.json")
        logger.warning(
            "%s: %s; recorded, and --backend auto will not use it", key, "; ".join(report.failures())
        )


def fp16_step(run: RunState) -> None:
    from msmlp.exporters.precision import convert_fp16

    reduced_precision_step(
        run,
        "fp16",
        (
            "convert to FP16 (ModelOpt AutoCast)",
            lambda stage: convert_fp16(run.result.artifacts["fp32"], stage, keep_fp32=run.opts.keep_fp32),
        ),
        ("verify FP16 against PyTorch FP32", verification_images(run.opts.images), ""),
    )
    backend_steps(run, "fp16", verification_images(run.opts.images))


def int8_step(run: RunState) -> None:
    from msmlp.exporters.calibration import calibration_batch
    from msmlp.exporters.quantize import quantize_int8
    from msmlp.fileio import file_sha256

    opts = run.opts
    calib_files, held_out, note = int8_image_split(opts.calib, opts.images)
    with run.progress.step(
        "calibrate", f"calibration batch ({opts.calib_size} inputs, {len(calib_files)} images)"
    ) as step:
        key = calibration_key(run.config, calib_files, opts.calib_size, opts.seed)
        cache = run.out / f"calib_{opts.calib_size}_{key}.npy"
        calib = calibration_batch(run.config, calib_files, opts.calib_size, seed=opts.seed, cache=cache)
        step["detail"] = f"cached in {cache.name}"
    calibration = {
        "files": [f.name for f in calib_files],
        "sha256": [file_sha256(f) for f in calib_files],
        "cache": cache.name,
        "note": note,
    }

    def quantize(stage: Path) -> dict:
        if opts.target_cosine is None and not opts.accuracy_search:
            info = quantize_int8(
                run.result.artifacts["fp32"],
                stage,
                calib,
                method=opts.calib_method,
                keep_fp32=opts.keep_fp32,
                target=opts.int8_target or "cpu",
            )
            return {**info, "calibration": calibration}
        from msmlp.data.transforms import augmented, load_image, preprocess
        from msmlp.diagnose.autoprec import Goal, quantize_mixed
        from msmlp.verify import MIN_SAMPLES

        goal = None
        if opts.accuracy_search:  # labelled --val images, judged by top-1 against FP32
            from msmlp.pipeline.accuracy import search_inputs

            inputs, labels = search_inputs(run)
            goal = Goal(max_drop_points=opts.max_accuracy_drop, labels=labels)
        else:
            count = max(MIN_SAMPLES, len(held_out))
            inputs = preprocess(
                augmented([load_image(p) for p in held_out], count, seed=opts.seed), run.config
            )
        info = quantize_mixed(
            run.result.artifacts["fp32"],
            stage,
            calib,  # the cached calibration batch, reused: one calibration for the whole search
            inputs,
            opts.target_cosine,
            goal=goal,
            method=opts.calib_method,
            keep_fp32=opts.keep_fp32,
            plot=run.out / "int8_tradeoff.png",
            target=opts.int8_target or "cpu",
        )
        return {**info, "calibration": calibration}

    reduced_precision_step(
        run,
        "int8",
        (
            f"quantize to INT8 (ModelOpt, {opts.calib_method} calibration, Q/DQ placed for {opts.int8_target})",
            quantize,
        ),
        ("verify INT8 against PyTorch FP32 on held-out images", held_out, note),
        gate=_accuracy_gate(run),
    )
    backend_steps(run, "int8", held_out, note)


def _accuracy_gate(run: RunState) -> Callable[[Path], dict] | None:
    """With --val: top-1 of the staged INT8 graph against FP32 on labelled images, before it is kept."""
    if run.opts.val is None:
        return None

    def gate(stage: Path) -> dict:
        from msmlp.pipeline.accuracy import accuracy_gate, summary_line

        with run.progress.step("accuracy_int8", "INT8 top-1 against FP32 on --val (labelled)") as step:
            record = accuracy_gate(run, stage)
            step["detail"] = summary_line(record)
        return record

    return gate


def reduced_precision_step(
    run: RunState,
    precision: str,
    convert: tuple[str, Callable[[Path], dict]],
    verify: tuple[str, Sequence[Path], str],
    gate: Callable[[Path], dict] | None = None,
) -> None:
    """Convert the FP32 graph into a staged file, check it, verify it against PyTorch FP32 on the given
    images, pass it through ``gate`` (which raises to refuse it), and only then move it into place and
    record it in the manifest."""
    final = run.out / ONNX_FILES[precision]
    (convert_title, convert_fn), (verify_title, images, note) = convert, verify
    with staged(final) as stage:
        with run.progress.step(precision, convert_title) as step, quiet_stdout():
            info = convert_fn(stage)
            check = check_graph(stage)
            step["detail"] = check.summary()
        with run.progress.step(f"verify_{precision}", verify_title) as step:
            report = verify_onnx(run, stage, final, precision, images, note)
            step["detail"] = verdict(report)
        if gate is not None:
            gate(stage)
        commit(run, stage, final, precision, check, report, {"info": info})


def engine_step(run: RunState) -> None:
    """Build a TensorRT plan for each reduced-precision graph (or the FP32 one), where TensorRT is usable."""
    opts = run.opts
    with run.progress.step("engine", "TensorRT engine") as step:
        available, reason = tensorrt_status()
        if not available:
            if opts.engine:
                raise ExportError(f"--engine was given but the engine cannot be built: {reason}")
            logger.info("engine step skipped: %s", reason or TENSORRT_MISSING)
            run.result.skipped["engine"] = reason or TENSORRT_MISSING
            step["detail"] = "skipped"
            return
        from msmlp.exporters.engine import build_engine

        wanted = [p for p in ("int8", "fp16") if p in run.result.artifacts] or ["fp32"]
        for precision in wanted:
            plan = run.out / ONNX_FILES[precision].replace(".onnx", ".plan")
            info = build_engine(
                run.result.artifacts[precision],
                plan,
                batch=opts.batch,  # type: ignore[arg-type]
                input_name=run.config.input_name,
                input_shape=tuple(run.config.input_size),
                workspace_gib=opts.workspace_gib,
                opt_level=opts.opt_level,
                timing_cache=opts.timing_cache,
                plugins=opts.plugins,
                shift_plugins=opts.shift == "plugin",
                metadata={
                    "model": opts.model,
                    "precision": precision,
                    "config": run.config.to_dict(),
                    "weights": dict(run.model.weights_info),
                },
            )
            try:
                report = verify_engine(run, plan, precision)
            except MsmlpError:  # a plan that failed verification is not an artefact; its report stays
                plan.unlink(missing_ok=True)
                plan.with_name(plan.name + ".json").unlink(missing_ok=True)
                raise
            run.result.artifacts[f"{precision}_engine"] = plan
            run.result.reports[f"{precision}_engine"] = report
            run.manifest.add(plan, {"precision": precision, "info": info, "verification": report.summary()})
            run.manifest.write()
        step["detail"] = ", ".join(ONNX_FILES[p].replace(".onnx", ".plan") for p in wanted)


def _plugin_ops(shift: str) -> tuple[str, ...]:
    """The shift plugins' op types, which TensorRT parses once msmlp registers them."""
    if shift != "plugin":
        return ()
    from msmlp.plugins.onnx_nodes import NAMESPACE, PLUGIN_OPS

    return tuple(f"{NAMESPACE}::{op}" for op in PLUGIN_OPS)


def verdict(report: VerifyReport) -> str:
    from msmlp.verify import summary_line

    return summary_line(report.summary())
