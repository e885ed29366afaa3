"""Export a registered model to ONNX, check it for TensorRT / ONNX Runtime, and verify it against PyTorch.

Writes model.onnx (weights inline, dynamic batch axis), model.json (config, I/O, batch profile, hashes,
versions, verification summary) and verify_<precision>.json in --out (default out/<model>). With
--fp16 / --int8 also model.fp16.onnx / model.int8.onnx, each verified against PyTorch FP32 (INT8 on
held-out images). A TensorRT engine is built last where TensorRT is installed.

Without --weights the model gets synthetic weights (seed 0) in which every block contributes: the
graph and the parity checks are real, the predictions are not.

examples:
  msmlp-export --model s2mlpv2_small
  msmlp-export --model msmlp_tiny --weights msmlp_tiny_ckpt_epoch299.pth --fp16 --int8
"""

from __future__ import annotations

import argparse

from msmlp.optionspec import add_options, from_args
from msmlp.pipeline.options import ExportOptions  # light: declarations only

HELP = "export a model to ONNX (+FP16/INT8, engine), check it and verify it against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, ExportOptions)


def run(args: argparse.Namespace) -> int:
    from msmlp.extras import require_extra

    require_extra("export", "msmlp export")
    from msmlp.pipeline import run_export
    from msmlp.verify import summary_line

    options = from_args(ExportOptions, args)
    result = run_export(options)
    print(f"{'artefact':<22} {'MB':>8}  {'backend':<12} verification")
    if result.feature_runs:
        return _print_features(result)
    extra = [k for k in result.reports if k not in result.artifacts]  # e.g. bf16: model.onnx on OpenVINO
    rows = [(result.artifacts[k], result.reports.get(k)) for k in result.artifacts]
    rows += [(result.artifacts["fp32"], result.reports[k]) for k in extra]
    for path, report in rows:
        verdict = "reused (verified earlier)" if path.name in result.reused and report is None else "-"
        backend = "-"
        if report is not None:
            s = report.summary()
            backend = str(s.get("backend") or "-")
            verdict = f"{s['precision']} {summary_line(s)}"
        print(f"{path.name:<22} {path.stat().st_size / 1e6:>8.1f}  {backend:<12} {verdict}")
    if result.accuracy is not None:
        from msmlp.pipeline.accuracy import summary_line as accuracy_line

        print(f"INT8 accuracy: {accuracy_line(result.accuracy)}")
    for step, why in result.skipped.items():
        print(f"{step} skipped: {why}")
    print(f"written to {result.out}/ (model.json has the metadata, verify_*.json the parity reports)")
    return 0


def _print_features(result) -> int:
    """The summary of a feature export: one line per backend run, its worst output at any size."""
    for run in result.feature_runs:
        path = result.out / run["file"]
        sizes = ", ".join(f"{h}x{w}" for h, w in (s["size"] for s in run["sizes"]))
        verdict = "passed" if run["passed"] else "FAILED"
        print(
            f"{path.name:<22} {path.stat().st_size / 1e6:>8.1f}  {run['backend']:<12} {run['hint']} {verdict}: "
            f"worst cosine {run['worst_cosine']:.7f} over every output at {sizes}"
        )
    for step, why in result.skipped.items():
        print(f"{step} skipped: {why}")
    print(f"written to {result.out}/ (model.json has the layout, verify_features.json every figure)")
    return 0
