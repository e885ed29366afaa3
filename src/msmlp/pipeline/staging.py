"""Staging and commit of artefacts: a file is written under a hidden name, and moved to its final name
and listed in ``model.json`` only once it is checked and verified; a failure leaves nothing half-made."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from msmlp.artifacts import read_artifact
from msmlp.exporters.check import CheckReport
from msmlp.pipeline.state import RunState
from msmlp.verify import VerifyReport


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A hidden staging path beside ``final``; deleted on every exit (after a commit it is gone already)."""
    stage = final.with_name(f".{final.stem}.unverified{final.suffix}")
    try:
        yield stage
    finally:
        stage.unlink(missing_ok=True)
        stage.with_name(stage.name + ".data").unlink(missing_ok=True)


def commit(
    run: RunState,
    stage: Path,
    final: Path,
    precision: str,
    check: CheckReport,
    report: VerifyReport,
    extra: dict[str, Any],
) -> None:
    """Move a verified graph to its final name and list it in the manifest."""
    os.replace(stage, final)
    run.result.artifacts[precision] = final
    run.result.reports[precision] = report
    run.manifest.add(
        final,
        {
            "precision": precision,
            "nodes": check.node_count,
            "op_counts": check.op_counts,
            "check": check.to_dict(),
            "report": f"verify_{precision}.json",
            "verification": report.summary(),
            **extra,
        },
    )
    run.manifest.write()


def describe_stage(run: RunState, stage: Path, precision: str) -> Any:
    """The staged file's description before the manifest lists it: what the export knows about it."""
    return replace(
        read_artifact(stage),
        model=run.opts.model,
        config=run.config,
        batch=run.opts.batch,
        precision=precision,
        weights=dict(run.model.weights_info),
    )
