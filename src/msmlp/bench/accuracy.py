"""``msmlp bench --compare --data DIR``: labelled accuracy beside the speed of every row, so the table
that names the fastest backend also says what each one costs in top-1 (after Ultralytics' benchmark, which
reports the task metric for every export format).

Every loaded row is scored over the same images through ``msmlp eval``'s streaming and statistics
(:mod:`msmlp.evaluate`): top-1/top-5 with Wilson intervals, the top-1 difference against the first row
(eager PyTorch FP32) and McNemar's exact p.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from msmlp.evaluate.datasets import LabelledSet, open_dataset
from msmlp.runtime.base import Backend

MAX_WORKERS = 4


def open_data(source: Path) -> LabelledSet:
    """``--data``: any layout ``msmlp eval --data`` takes; every image decodes (checked up front)."""
    from msmlp.data.imagecheck import require_decodable

    data = open_dataset(source)
    require_decodable(data.paths, "--data")
    return data


def score_rows(
    rows: list[tuple[str, Backend]], config: Any, data: LabelledSet, batch: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(label -> accuracy columns, what the set was) for loaded backends; the first row is the reference."""
    from msmlp.evaluate.report import build_report
    from msmlp.evaluate.stream import Candidate, evaluate

    classes = config.num_classes
    data.check_classes(classes, "the compared model")
    candidates = [
        Candidate(label, backend, config, classes, {"precision": backend.info.precision})
        for label, backend in rows
    ]
    workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    progress, tallies = evaluate(data, candidates, batch=batch, workers=workers, strict=True)
    report = build_report(data, candidates, tallies, progress, reference=0, batch=batch, workers=workers)
    columns = {}
    for row in report["candidates"]:
        vs = row["vs_reference"]
        columns[row["label"]] = {
            "accuracy_top1": row["top1"],
            "accuracy_top1_ci95": row["top1_ci95"],
            "accuracy_top5": row["top5"],
            "accuracy_top5_ci95": row["top5_ci95"],
            "accuracy_top1_delta_points": vs["top1_delta_points"],
            "accuracy_mcnemar_p": vs["mcnemar_p"],
        }
    about = {**report["data"], "images_scored": report["images_scored"], "batch": batch}
    return columns, about
