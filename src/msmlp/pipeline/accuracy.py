"""The INT8 accuracy gate of ``msmlp-export --int8 --val DIR [--max-accuracy-drop POINTS]``.

Parity with FP32 (cosine, top-1 agreement) says how far INT8 moved the logits; a deployer decides on
labelled accuracy. The staged INT8 graph and the committed FP32 graph both run on ONNX Runtime CPU over
the same held-out labelled images, through ``msmlp eval``'s streaming (:mod:`msmlp.evaluate`): top-1
and top-5 with Wilson intervals, the paired drop with its interval (Newcombe), McNemar's p. The report
is written first; then a drop above the budget raises :class:`VerificationError` (exit 3) and the
staged graph is never moved into place. The images must be ones calibration never saw (checked up
front: :func:`msmlp.pipeline.images.val_overlap`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msmlp.errors import VerificationError
from msmlp.evaluate.datasets import LabelledSet, open_dataset, with_model_labels
from msmlp.evaluate.stats import paired_drop_interval
from msmlp.fileio import write_text_atomic

if TYPE_CHECKING:
    from msmlp.models.config import DeployConfig
    from msmlp.pipeline.state import RunState

REPORT = "accuracy_int8.json"
SEARCH_IMAGES = 256  # --accuracy-search: the labelled images the search holds in memory, at most
KEY = "int8_accuracy"  # the model.json "verification" key
EVAL_BATCH = 32
MAX_WORKERS = 4


def open_val(source: Path, config: DeployConfig) -> LabelledSet:
    """``--val`` as the model reads it: any ``msmlp eval --data`` layout, class folders named by the
    model's own labels (``--labels``) mapped by name, as ``msmlp eval`` maps them."""
    data = open_dataset(source)
    return with_model_labels(data, config.labels) if config.labels else data


def gate_record(report: dict[str, Any], budget: float | None) -> dict[str, Any]:
    """The decision from an eval report of [FP32 reference, INT8]: the drop in top-1 points, its 95 %
    interval, and ``passed`` (None without a budget). Rounded to 6 decimals before comparing, so a budget
    copied from a recorded drop passes."""
    fp32, int8 = report["candidates"]
    n = report["images_scored"]
    vs = int8["vs_reference"]
    drop = round(100 * (fp32["top1_correct"] - int8["top1_correct"]) / n, 6) if n else None
    lo, hi = paired_drop_interval(fp32["top1_correct"], int8["top1_correct"], vs["lost"], vs["gained"], n)
    return {
        "file": "model.int8.onnx",
        "backend": int8.get("backend"),
        "data": report["data"],
        "images_scored": n,
        "unreadable": report["unreadable"],
        "fp32": _accuracy(fp32),
        "int8": _accuracy(int8),
        "drop_points": drop,
        "drop_ci95_points": [round(100 * lo, 6), round(100 * hi, 6)],
        "lost": vs["lost"],
        "gained": vs["gained"],
        "mcnemar_p": vs["mcnemar_p"],
        "max_drop_points": budget,
        "passed": None if budget is None or drop is None else drop <= budget,
        "report": REPORT,
    }


def summary_line(record: dict[str, Any]) -> str:
    """One line for the export summary and the log."""
    fp32, int8 = record["fp32"], record["int8"]
    lo, hi = record["drop_ci95_points"]
    verdict = {None: "measured (no budget)", True: "within", False: "ABOVE"}[record["passed"]]
    budget = f" --max-accuracy-drop {record['max_drop_points']}" if record["passed"] is not None else ""
    return (
        f"top-1 on {record['images_scored']} --val images: FP32 {_pct(fp32)}, INT8 {_pct(int8)}; "
        f"drop {record['drop_points']:.2f} points (95% CI {lo:.2f} to {hi:.2f}), {verdict}{budget}"
    )


def accuracy_gate(run: RunState, stage: Path) -> dict[str, Any]:
    """Measure the staged INT8 graph against ``model.onnx`` on ``--val``; write the report and the
    model.json record; raise when the drop is above the budget. Returns the record."""
    from msmlp.evaluate.report import build_report
    from msmlp.evaluate.stream import Candidate, evaluate
    from msmlp.pipeline.staging import describe_stage
    from msmlp.runtime.ort import OnnxRuntimeBackend

    opts = run.opts
    data = open_val(opts.val, run.config)  # type: ignore[arg-type]  # checked up front: --val is set
    data.check_classes(run.config.num_classes, f"{opts.model}")
    fp32 = OnnxRuntimeBackend(run.result.artifacts["fp32"])
    int8 = OnnxRuntimeBackend(stage, artifact=describe_stage(run, stage, "int8"))
    workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    with fp32, int8:
        candidates = [
            Candidate(f"{name}@onnxruntime", backend, run.config, run.config.num_classes, _describe(backend))
            for name, backend in (("model.onnx", fp32), ("model.int8.onnx", int8))
        ]
        progress, tallies = evaluate(data, candidates, batch=EVAL_BATCH, workers=workers, strict=True)
    report = build_report(data, candidates, tallies, progress, reference=0, batch=EVAL_BATCH, workers=workers)
    record = gate_record(report, opts.max_accuracy_drop)
    write_text_atomic(run.out / REPORT, json.dumps({**report, "gate": record}, indent=2) + "\n")
    stale = ""
    if record["passed"] is False:
        stale = _drop_earlier_int8(run)
    run.manifest.record_verification(KEY, record)
    run.manifest.write()
    run.result.accuracy = record
    if record["passed"] is False:
        lo, hi = record["drop_ci95_points"]
        raise VerificationError(
            f"INT8 loses {record['drop_points']:.2f} top-1 points (95% CI {lo:.2f} to {hi:.2f}) on --val "
            f"{str(opts.val)!r} "
            f"(FP32 {_pct(record['fp32'])}, INT8 {_pct(record['int8'])}), more than --max-accuracy-drop "
            f"{opts.max_accuracy_drop}; model.int8.onnx was not kept{stale} (report: {run.out / REPORT}); "
            "calibrate on more or other images (--calib, --calib-size, --calib-method), keep layers in FP32 "
            "(--accuracy-search, --keep-fp32), or raise the budget"
        )
    return record


def _drop_earlier_int8(run: RunState) -> str:
    """A refused graph leaves no INT8 graph behind: one from an earlier run in --out (which a deploy step
    would otherwise pick up, next to a verify_int8.json that no longer describes it) goes too."""
    from msmlp.artifacts import ONNX_FILES

    earlier = run.out / ONNX_FILES["int8"]
    if not earlier.is_file():
        return ""
    earlier.unlink()
    run.manifest.remove(earlier.name)
    return ", and the one an earlier run left in --out was removed"


def search_inputs(run: RunState) -> tuple[Any, Any]:
    """``--accuracy-search``: a seeded subset of at most :data:`SEARCH_IMAGES` --val images, preprocessed
    (held in memory by the search), and their labels. The gate still judges all of --val afterwards."""
    import numpy as np

    from msmlp.data.transforms import preprocess

    data = open_val(run.opts.val, run.config)  # type: ignore[arg-type]
    rows = np.arange(len(data))
    if len(data) > SEARCH_IMAGES:
        rows = np.sort(np.random.default_rng(run.opts.seed).choice(len(data), SEARCH_IMAGES, replace=False))
    inputs = preprocess([data.paths[i] for i in rows], run.config)
    return inputs, np.asarray([data.labels[i] for i in rows], np.int64)


def _accuracy(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("top1", "top1_ci95", "top1_correct", "top5", "top5_ci95", "top5_correct")
    return {k: row[k] for k in keys}


def _pct(acc: dict[str, Any]) -> str:
    lo, hi = acc["top1_ci95"]
    return f"{100 * acc['top1']:.2f}% ({100 * lo:.1f}-{100 * hi:.1f})"


def _describe(backend: Any) -> dict[str, Any]:
    info = backend.info
    return {"backend": info.backend, "precision": info.precision, "model": info.model}
