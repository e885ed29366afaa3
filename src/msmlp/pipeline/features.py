"""``msmlp-export --features``: the backbone's stage outputs as one graph, verified per output at every
size it is exported for.

Steps: build the model, export the feature graph (:mod:`msmlp.exporters.features`), check it (no Roll,
Scatter or control flow; dynamic H/W only with a size profile), then compare every output against
PyTorch FP32 on real photos letterboxed to each size of the profile (min, opt, max), on ONNX Runtime and
OpenVINO in FP32 and on OpenVINO with the BF16 hint where the CPU has it; with ``--fp16`` and ``--int8``
the converted graphs the same way (INT8 on held-out photos, calibrated at the opt size). A failure on
ONNX Runtime at any size stops the export (that graph is not kept); one on another backend is recorded,
so ``--backend auto`` never picks it. ``verify_features.json`` holds every figure; ``model.json`` the
layout and the summaries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.artifacts import ONNX_FILES, read_artifact
from msmlp.data.dense import dense_array
from msmlp.errors import EngineError, VerificationError
from msmlp.features import FeatureLayout, SizeProfile, placement
from msmlp.fileio import write_text_atomic
from msmlp.log import logger
from msmlp.pipeline.options import ExportOptions
from msmlp.pipeline.progress import Progress
from msmlp.pipeline.state import ExportResult, open_manifest
from msmlp.verify.stats import ParityStats, Tolerance, compare

REPORT = "verify_features.json"
# per output, each sample's feature map as one vector; rel error is relative to that map's value range
TOLERANCES = {
    "fp32": Tolerance(max_rel=1e-4, min_cosine=0.99999),
    "bf16": Tolerance(min_cosine=0.999),
    "int8": Tolerance(min_cosine=0.99),
    "fp16": Tolerance(min_cosine=0.999),
}
FIT = "letterbox"  # verification photos are letterboxed into each size (no crop: the whole picture)
# per graph precision: (verification key, backend, hint), the keys ``--backend auto`` reads (backend table);
# the first is the gate that keeps the file
CHECKS = {
    "fp32": [
        ("fp32", "onnxruntime", "f32"),
        ("fp32_openvino", "openvino", "f32"),
        ("bf16", "openvino", "bf16"),
    ],
    "int8": [("int8", "onnxruntime", "f32"), ("int8_openvino", "openvino", "bf16")],
    "fp16": [("fp16", "onnxruntime", "f32")],
}


def run_feature_export(opts: ExportOptions) -> ExportResult:
    """Export, check and verify the feature graph (and with ``--fp16``/``--int8`` its FP16/INT8
    versions) in ``opts.out_dir``; ``opts`` are checked already."""
    from msmlp.exporters.check import check_graph
    from msmlp.exporters.features import export_features_onnx, feature_layout
    from msmlp.models.features import FeatureBackbone
    from msmlp.models.weights import load_for_deploy
    from msmlp.pipeline.images import verification_images
    from msmlp.pipeline.options import deploy_config

    out = opts.out_dir
    result = ExportResult(out=out)
    model = load_for_deploy(opts.model, opts.weights, opts.seed, config=deploy_config(opts))
    config = model.deploy_config
    stride = FeatureBackbone(model).stride
    profile = SizeProfile.parse(opts.dynamic_size, stride) if opts.dynamic_size else None
    layout = feature_layout(model, config, opts.out_indices, profile)  # bad indices: before any output
    plan = ["build", "export", "check", *(f"verify_{key}" for key, _, _ in CHECKS["fp32"])]
    plan += ["fp16", *(f"verify_{key}" for key, _, _ in CHECKS["fp16"])] if opts.fp16 else []
    plan += ["calibrate", "int8", *(f"verify_{key}" for key, _, _ in CHECKS["int8"])] if opts.int8 else []
    progress = Progress(plan)
    with progress.step("build", f"build {opts.model} (stage features)") as step:
        step["detail"] = ", ".join(f"{o.name} {o.channels}ch /{o.stride}" for o in layout.outputs)
    manifest = open_manifest(opts, model)
    result.manifest = manifest
    state = _State(opts, model, config, layout, progress, result)
    final = out / ONNX_FILES["fp32"]
    images = verification_images(opts.images)

    def export(stage: Path) -> dict:
        sizes = " / ".join(f"{h}x{w}" for h, w in layout.sizes())
        title = f"export ONNX features ({'dynamic H/W ' if layout.dynamic else ''}{sizes})"
        with progress.step("export", title) as step:
            export_features_onnx(
                model,
                stage,
                config=config,
                layout=layout,
                opset=opts.opset,
                batch=opts.batch,
                model_name=opts.model,
            )
            step["detail"] = f"{stage.stat().st_size / 1e6:.1f} MB"
        with progress.step("check", "check graph for TensorRT / ONNX Runtime") as step:
            check = check_graph(stage)
            step["detail"] = check.summary()
        return {"check": check.to_dict()}

    _committed(state, "fp32", final, export, images, "")
    if opts.fp16:
        _fp16(state, final, images)
    if opts.int8:
        _int8(state, final)
    _write_report(state, images)
    result.artifacts["fp32"] = final
    result.feature_runs = state.runs
    manifest.record_features(layout)
    manifest.record_timings(progress.timings)
    manifest.record_skipped(result.skipped)
    manifest.write()
    read_artifact(final)  # what every reader will see: the layout from the graph, the entry by hash
    return result


@dataclass
class _State:
    opts: ExportOptions
    model: Any
    config: Any
    layout: FeatureLayout
    progress: Progress
    result: ExportResult
    runs: list[dict] = field(default_factory=list)
    references: dict[tuple[Path, ...], dict] = field(default_factory=dict)

    def reference(self, images: Sequence[Path]) -> dict:
        """PyTorch FP32's outputs on ``images`` at every size (with the inputs), computed once per image
        set: the FP32 and FP16 graphs are judged on the same photos."""
        key = tuple(images)
        if key not in self.references:
            self.references[key] = _reference_features(self.model, self.layout, images, self.config)
        return self.references[key]


def _committed(
    state: _State, precision: str, final: Path, make: Any, images: Sequence[Path], note: str
) -> dict:
    """Write ``final`` through a staged file made by ``make(stage) -> manifest info``: verified per output
    on every backend of ``CHECKS[precision]``; kept only if the first (ONNX Runtime) passes; the others
    are recorded (``--backend auto`` reads them)."""
    stage = final.with_name(f".{final.stem}.unverified{final.suffix}")
    try:
        info = make(stage)
        reference = state.reference(images)
        runs = []
        for key, backend, hint in CHECKS[precision]:
            title = f"verify every output of the {precision.upper()} graph against PyTorch FP32 ({backend}, {hint})"
            with state.progress.step(f"verify_{key}", title) as step:
                why = _unavailable(backend, hint)
                if why:
                    state.result.skipped[f"{key} ({hint})"] = why
                    step["detail"] = f"skipped: {why}"
                    continue
                run = _verify_run(stage, key, backend, hint, state.layout, reference, precision)
                run.update(note=note, file=final.name)
                runs.append(run)
                step["detail"] = (
                    f"{'passed' if run['passed'] else 'FAILED'}, worst cosine {run['worst_cosine']:.6f}"
                )
        state.runs += runs
        first = runs[0]
        if not first["passed"]:
            _write_report(state, images)
            raise VerificationError(
                f"the {precision.upper()} feature graph breaks its tolerance against PyTorch: {first['failures'][0]} "
                f"(all figures in {final.parent / REPORT}); it was not kept"
            )
        os.replace(stage, final)
    finally:
        stage.unlink(missing_ok=True)
    manifest = state.result.manifest
    assert manifest is not None
    manifest.add(final, {"precision": precision, **info, "verification": _summary(first, final)})
    for run in runs[1:]:
        manifest.record_verification(run["key"], _summary(run, final))
        if not run["passed"]:
            logger.warning(
                "%s: %s; recorded, and --backend auto will not use it", run["key"], run["failures"][0]
            )
    state.result.artifacts[precision] = final
    return first


def _fp16(state: _State, fp32_graph: Path, images: Sequence[Path]) -> None:
    """FP16 (ModelOpt AutoCast; LayerNorms kept FP32 from the recorded family layout), its range check
    run on the photos at the largest size, verified per output at every size."""
    from msmlp.exporters.precision import convert_fp16

    largest = state.layout.sizes()[-1]

    def convert(stage: Path) -> dict:
        with state.progress.step("fp16", "convert to FP16 (ModelOpt AutoCast)") as step:
            inputs, _ = state.reference(images)[largest]  # the photos as FP32 was verified on them
            info = convert_fp16(fp32_graph, stage, keep_fp32=state.opts.keep_fp32, reference=inputs)
            step["detail"] = f"{stage.stat().st_size / 1e6:.1f} MB"
        return {"info": info}

    _committed(state, "fp16", fp32_graph.with_name(ONNX_FILES["fp16"]), convert, images, "")


def _int8(state: _State, fp32_graph: Path) -> None:
    """INT8 Q/DQ (ModelOpt PTQ), calibrated on photos letterboxed to the size the graph is deployed at
    (the profile's opt size, or its one size), verified per output on held-out photos at every size."""
    from msmlp.data.transforms import augmented, load_image
    from msmlp.exporters.quantize import quantize_int8
    from msmlp.pipeline.images import int8_image_split

    opts, layout = state.opts, state.layout
    calib_files, held_out, note = int8_image_split(opts.calib, opts.images)
    size = layout.opt_size
    with state.progress.step(
        "calibrate",
        f"calibration batch ({opts.calib_size} inputs at {size[0]}x{size[1]}, {len(calib_files)} images)",
    ) as step:
        views = augmented([load_image(p) for p in calib_files], opts.calib_size, seed=opts.seed)
        calib = np.stack(
            [dense_array(v, placement((v.height, v.width), layout, FIT, size), state.config) for v in views]
        )
        step["detail"] = f"{calib.shape[0]} letterboxed views"

    def quantize(stage: Path) -> dict:
        with state.progress.step("int8", f"quantize to INT8 (ModelOpt, Q/DQ for {opts.int8_target})") as step:
            info = quantize_int8(
                fp32_graph,
                stage,
                calib,
                method=opts.calib_method,
                keep_fp32=opts.keep_fp32,
                target=opts.int8_target or "cpu",
            )
            step["detail"] = f"{stage.stat().st_size / 1e6:.1f} MB"
        calibration = {
            "files": [f.name for f in calib_files],
            "size": list(size),
            "inputs": int(calib.shape[0]),
        }
        return {"info": {**info, "calibration": calibration}}

    note = "; ".join(x for x in (note, f"calibrated at {size[0]}x{size[1]}") if x)
    _committed(state, "int8", fp32_graph.with_name(ONNX_FILES["int8"]), quantize, held_out, note)


def _write_report(state: _State, images: Sequence[Path]) -> None:
    import json

    report = {
        "model": state.opts.model,
        "weights": dict(state.model.weights_info),
        "layout": state.layout.to_dict(),
        "images": [p.name for p in images],
        "fit": FIT,
        "tolerances": {k: describe(t) for k, t in TOLERANCES.items()},
        "statistics": "per output and size; each sample's feature map compared as one vector",
        "runs": state.runs,
    }
    write_text_atomic(state.opts.out_dir / REPORT, json.dumps(report, indent=2) + "\n")


def _unavailable(backend: str, hint: str) -> str | None:
    from msmlp.runtime.registry import get_spec

    return get_spec(backend).unavailable(hint if hint == "bf16" else None)


def verification_inputs(
    layout: FeatureLayout, images: Sequence[Path], config: Any
) -> dict[tuple[int, int], np.ndarray]:
    """Per size of the layout, the photos letterboxed into it: N,3,H,W float32."""
    from msmlp.data.transforms import load_image

    pictures = [load_image(p) for p in images]
    found = {}
    for size in layout.sizes():
        arrays = [
            dense_array(im, placement((im.height, im.width), layout, FIT, size), config) for im in pictures
        ]
        found[size] = np.stack(arrays)
    return found


def _reference_features(model: Any, layout: FeatureLayout, images: Sequence[Path], config: Any) -> dict:
    import torch

    from msmlp.models.features import FeatureBackbone

    backbone = FeatureBackbone(model, [o.stage for o in layout.outputs]).eval()
    found = {}
    for size, x in verification_inputs(layout, images, config).items():
        with torch.inference_mode():
            outs = backbone(torch.from_numpy(x))
        found[size] = (x, {o.name: t.numpy() for o, t in zip(layout.outputs, outs)})
    return found


def open_candidate(path: Path, backend: str, hint: str, artifact: Any = None) -> Any:
    from msmlp.runtime.registry import Request, get_spec

    request = Request(path, "onnx", precision=hint if backend == "openvino" else None, artifact=artifact)
    return get_spec(backend).open(request)


def _verify_run(
    stage: Path,
    key: str,
    backend: str,
    hint: str,
    layout: FeatureLayout,
    reference: dict,
    precision: str = "fp32",
) -> dict:
    """One backend's comparison of every output at every size; an FP16 or INT8 graph is judged by its
    precision's tolerance whatever the hint, an FP32 graph by the BF16 one under the bf16 hint."""
    tolerance = TOLERANCES[precision if precision != "fp32" else "bf16" if hint == "bf16" else "fp32"]
    sizes, failures, worst = [], [], 1.0
    with open_candidate(stage, backend, hint, read_artifact(stage)) as candidate:
        for (h, w), (x, want) in reference.items():
            try:
                got = candidate.infer({candidate.input_name: x}, outputs=layout.names)
            except EngineError as exc:  # a graph that cannot run at this size fails it, with the reason
                failures.append(f"at {h}x{w}: {exc}")
                worst = -1.0
                sizes.append({"size": [h, w], "error": str(exc), "outputs": {}})
                continue
            per_output = {}
            for name in layout.names:
                stats = feature_stats(want[name], got[name])
                broken = tolerance.failures(stats)
                failures += [f"{name} at {h}x{w}: {b}" for b in broken]
                worst = min(worst, stats.cosine)
                per_output[name] = {
                    "shape": list(got[name].shape),
                    **{k: v for k, v in stats.to_dict().items() if k in _REPORTED},
                    "passed": not broken,
                }
            sizes.append({"size": [h, w], "outputs": per_output})
    logger.info("    %s (%s, %s): worst cosine %.7f over %d sizes", key, backend, hint, worst, len(sizes))
    return {
        "key": key,
        "backend": backend,
        "hint": hint,
        "tolerance": describe(tolerance),
        "passed": not failures,
        "failures": failures,
        "worst_cosine": worst,
        "sizes": sizes,
    }


def describe(tolerance: Tolerance) -> str:
    return tolerance.describe().replace("the logit range", "each sample's feature map range")


_REPORTED = ("samples", "max_abs", "mean_abs", "max_rel", "mean_rel", "cosine", "cosine_mean")


def feature_stats(reference: np.ndarray, candidate: np.ndarray) -> ParityStats:
    """:func:`msmlp.verify.stats.compare` on feature maps: each sample's N,C,H,W map as one vector (the
    top-1/top-5 fields are meaningless for features and are not reported)."""
    if reference.shape != candidate.shape:
        from msmlp.errors import InputError

        raise InputError(f"feature map shape {candidate.shape} differs from PyTorch's {reference.shape}")
    n = reference.shape[0]
    return compare(reference.reshape(n, -1), candidate.reshape(n, -1))


def _summary(run: dict, final: Path) -> dict:
    outputs = [o for s in run["sizes"] for o in s["outputs"].values()] or [{"max_rel": None, "max_abs": None}]
    return {
        "passed": run["passed"],
        "backend": run["backend"],
        "hint": run["hint"],
        "file": final.name,
        "cosine": run["worst_cosine"],
        "max_rel": max((o["max_rel"] for o in outputs if o["max_rel"] is not None), default=None),
        "max_abs": max((o["max_abs"] for o in outputs if o["max_abs"] is not None), default=None),
        "sizes": [s["size"] for s in run["sizes"]],
        "tolerance": run["tolerance"],
        "failures": run["failures"][:5],
        "report": REPORT,
    }
