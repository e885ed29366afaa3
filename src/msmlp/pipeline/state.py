"""What one export run carries from step to step, and what it returns: its own module, so that the
steps, the staging and the verification all import it and none of them imports another's orchestration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from msmlp.manifest import Manifest
from msmlp.pipeline.options import ExportOptions
from msmlp.pipeline.progress import Progress
from msmlp.verify import VerifyReport

if TYPE_CHECKING:
    import torch.nn as nn

    from msmlp.models.config import DeployConfig


@dataclass
class ExportResult:
    out: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, VerifyReport] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # step -> why
    accuracy: dict | None = None  # the INT8 accuracy record on --val (pipeline.accuracy)
    feature_runs: list[dict] = field(default_factory=list)  # --features: per-output verification runs
    manifest: Manifest | None = None


@dataclass
class RunState:
    """The checked options, the model being exported and where its results go."""

    opts: ExportOptions
    model: nn.Module
    config: DeployConfig
    manifest: Manifest
    progress: Progress
    result: ExportResult

    @property
    def out(self) -> Path:
        return self.result.out


def open_manifest(opts: ExportOptions, model: nn.Module) -> Manifest:
    """``model.json`` in ``opts.out_dir`` for the model being exported (:meth:`Manifest.open` keeps what an
    earlier run of the same model, weights, opset and profile verified there)."""
    from msmlp.manifest import tool_versions
    from msmlp.runtime.registry import distributions

    return Manifest.open(
        opts.out_dir,
        model=opts.model,
        config=model.deploy_config,
        weights=model.weights_info,
        opset=opts.opset,
        batch=opts.batch,  # type: ignore[arg-type]  # set by check_options
        versions=tool_versions(distributions()),
    )
