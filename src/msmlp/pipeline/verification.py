"""Verification steps of the export: a staged file against PyTorch FP32, on the backend it will run on,
and each committed graph on the other backends the backend table lists verifications for.

Each report is written (under the final file's name) and its table logged before a broken tolerance
raises :class:`msmlp.errors.VerificationError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from msmlp.log import logger
from msmlp.pipeline.options import VERIFY_BATCH
from msmlp.verify import VerifyReport, verify, write_report

if TYPE_CHECKING:
    from msmlp.pipeline.options import ExportOptions
    from msmlp.pipeline.state import RunState
    from msmlp.runtime.base import Backend
    from msmlp.runtime.registry import BackendSpec, Verification


def verify_onnx(
    run: RunState, stage: Path, final: Path, precision: str, images: Sequence[Path], note: str
) -> VerifyReport:
    """The staged graph on ONNX Runtime CPU (a plugin graph through its Slice/Concat lowering)."""
    from msmlp.pipeline.staging import describe_stage
    from msmlp.runtime.ort import OnnxRuntimeBackend

    target = stage
    if run.opts.shift == "plugin":
        target = _lowered_copy(stage)
        note = (note + "; " if note else "") + "plugin nodes verified through their Slice/Concat lowering"
    candidate = OnnxRuntimeBackend(target, artifact=describe_stage(run, target, precision))
    report = _verify(run, candidate, images, precision, note)
    if target != stage:
        target.unlink(missing_ok=True)
    report.candidate["file"] = final.name
    return finish_report(report, final.parent / f"verify_{precision}.json")


def backend_verifications(opts: ExportOptions, graph: str) -> list[tuple[BackendSpec, Verification]]:
    """The backend table's verifications of the committed ``graph`` ("fp32", "int8"...) this export
    runs, each a step ``verify_<key>``: none with ``--no-bf16`` for a BF16 one, none on a backend that
    cannot run plugin nodes for a plugin graph."""
    from msmlp.runtime.registry import backend_specs

    return [
        (spec, check)
        for spec in backend_specs()
        if opts.shift == "slice" or spec.plugin_nodes
        for check in spec.verifications
        if check.graph == graph and not (check.bf16 and opts.bf16 is False)
    ]


def usable_hint(spec: BackendSpec, check: Verification, opts: ExportOptions) -> tuple[bool, str | None, str]:
    """Whether ``check`` can run here, with the first of its hints this machine runs (never bf16 with
    ``--no-bf16``), and why not when it cannot."""
    missing = spec.unavailable()
    if missing:
        return False, None, missing
    reasons = []
    for hint in check.hints:
        if hint == "bf16" and opts.bf16 is False:
            continue
        why = spec.unavailable(hint)
        if why is None:
            return True, hint, ""
        reasons.append(why)
    return False, None, "; ".join(reasons) or "no hint left to run"


def verify_on(
    run: RunState,
    spec: BackendSpec,
    check: Verification,
    onnx: Path,
    images: Sequence[Path],
    hint: str | None,
    note: str = "",
) -> VerifyReport:
    """A committed graph on ``spec``'s backend with ``hint``, judged by the tolerance of
    ``check.tolerance``; the report goes to ``verify_<key>.json`` and is returned even when it failed
    (the caller decides what a failure means for this variant)."""
    from msmlp.pipeline.staging import describe_stage
    from msmlp.runtime.registry import Request

    artifact = describe_stage(run, onnx, check.tolerance)
    candidate = spec.open(Request(onnx, "onnx", precision=hint, artifact=artifact))
    report = _verify(run, candidate, images, check.tolerance, note)
    report.candidate["file"] = onnx.name
    path = onnx.parent / f"verify_{check.key}.json"
    write_report(report, path)
    for line in report.table().splitlines():
        logger.info("    %s", line)
    return report


def verify_engine(run: RunState, plan: Path, precision: str) -> VerifyReport:
    from msmlp.pipeline.images import int8_image_split, verification_images
    from msmlp.runtime.trt import TensorRTBackend

    images = (
        verification_images(run.opts.images)
        if precision != "int8"
        else int8_image_split(run.opts.calib, run.opts.images)[1]
    )
    candidate = TensorRTBackend(plan, expected_model=run.opts.model)
    report = _verify(run, candidate, images, precision, "")
    return finish_report(report, plan.parent / f"verify_{precision}_engine.json")


def _verify(
    run: RunState, candidate: Backend, images: Sequence[Path], precision: str, note: str
) -> VerifyReport:
    from msmlp.runtime.torch_backend import TorchBackend

    with TorchBackend(run.model, config=run.config) as reference, candidate:
        return verify(
            reference,
            candidate,
            images,
            precision,
            verify_batch_sizes(run.opts.batch),  # type: ignore[arg-type]
            config=run.config,
            seed=run.opts.seed,
            note=note,
            raise_on_failure=False,
        )


def finish_report(report: VerifyReport, path: Path) -> VerifyReport:
    """Write the report, log its table, then raise VerificationError if a tolerance broke."""
    write_report(report, path)
    for line in report.table().splitlines():
        logger.info("    %s", line)
    report.raise_if_failed(path)
    return report


def verify_batch_sizes(batch: Sequence[int]) -> list[int]:
    """Batch 1 and 8, moved into the profile (e.g. 4 and 8 for 4,8,16; 1 and 4 for 1,2,4)."""
    lo, _, hi = batch
    return sorted({lo, min(max(VERIFY_BATCH, lo), hi)})


def _lowered_copy(stage: Path) -> Path:
    """A copy of a plugin graph with each plugin node replaced by its Slice/Concat equivalent."""
    import onnx

    from msmlp.plugins.onnx_nodes import lower_plugin_nodes

    lowered = stage.with_name(stage.name.replace(".unverified", ".lowered"))
    onnx.save(lower_plugin_nodes(onnx.load(str(stage))), str(lowered))
    return lowered
