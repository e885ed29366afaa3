"""A verification report: per batch size results, the summary kept in model.json, the terminal table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.errors import VerificationError
from msmlp.verify.stats import (
    AUGMENTATION,
    DEFINITIONS,
    MIN_DECISIVE,
    MIN_SAMPLES,
    ParityStats,
    Tolerance,
    top1_not_measurable,
)


@dataclass
class BatchResult:
    batch_size: int
    batches: int
    originals: int
    views: int
    stats: ParityStats
    failures: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class VerifyReport:
    precision: str
    tolerance: Tolerance
    reference: dict[str, Any]
    candidate: dict[str, Any]
    images: list[str]
    seed: int
    results: list[BatchResult] = field(default_factory=list)
    note: str = ""
    min_samples: int = MIN_SAMPLES

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[str]:
        return [f"batch {r.batch_size}: {f}" for r in self.results for f in r.failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "precision": self.precision,
            "tolerance": {**asdict(self.tolerance), "text": self.tolerance.describe()},
            "reference": self.reference,
            "candidate": self.candidate,
            "images": self.images,
            "augmentation": {"method": AUGMENTATION, "seed": self.seed},
            "min_samples_per_batch": self.min_samples,
            "min_decisive_for_top1": MIN_DECISIVE,
            "note": self.note,
            "definitions": DEFINITIONS,
            "results": [
                {
                    "batch_size": r.batch_size,
                    "batches": r.batches,
                    "samples": r.stats.samples,
                    "originals": r.originals,
                    "augmented_views": r.views,
                    "passed": r.passed,
                    "failures": r.failures,
                    "notes": r.notes,
                    "top1_measurable": r.stats.top1_measurable,
                    **r.stats.to_dict(),
                }
                for r in self.results
            ],
        }

    def summary(self) -> dict[str, Any]:
        """The short form kept in export metadata: pass/fail and the worst figures over batch sizes."""
        rs = [r.stats for r in self.results]
        judged = [s.top1_decisive for s in rs if s.top1_measurable]
        return {
            "passed": self.passed,
            "precision": self.precision,
            "backend": self.candidate.get("backend"),
            "file": Path(str(self.candidate["file"])).name if self.candidate.get("file") else None,
            "batch_sizes": [r.batch_size for r in self.results],
            "samples": sum(s.samples for s in rs),
            "samples_per_batch": [s.samples for s in rs],
            "max_abs": max(s.max_abs for s in rs),
            "max_rel": max(s.max_rel for s in rs),
            "cosine": min(s.cosine for s in rs),
            "top1": min(s.top1 for s in rs),
            "top1_decisive": min(judged) if judged else None,
            "top1_measurable": bool(judged),
            "decisive": sum(s.decisive for s in rs),
            "near_ties": sum(s.near_ties for s in rs),
            "top5": min(s.top5 for s in rs),
            "failures": self.failures(),
            "notes": [f"batch {r.batch_size}: {n}" for r in self.results for n in r.notes],
        }

    def table(self) -> str:
        """One table for the terminal."""
        head = f"{'batch':>5} {'samples':>12} {'max abs':>9} {'mean abs':>9} {'max rel':>9} {'mean rel':>9} "
        head += f"{'cosine':>10} {'top-1':>7} {'decisive':>8} {'top-5':>7}  result"
        lines = [
            f"parity {self.precision}: {_label(self.candidate)} vs {_label(self.reference)} on "
            f"{len(self.images)} image(s): {', '.join(self.images)}",
            head,
        ]
        for r in self.results:
            s = r.stats
            samples = f"{s.samples}" + (f" ({r.views} aug)" if r.views else "")
            result = "ok" if r.passed else "FAIL: " + "; ".join(r.failures)
            result += "".join(f" ({n})" for n in r.notes)
            lines.append(
                f"{r.batch_size:>5} {samples:>12} {s.max_abs:>9.2e} {s.mean_abs:>9.2e} {s.max_rel:>9.2e} "
                f"{s.mean_rel:>9.2e} {format_cosine(s.cosine):>10} {s.top1:>7.1%} "
                f"{f'{s.decisive}/{s.samples}':>8} {s.top5:>7.1%}  {result}"
            )
        lines.append(
            f"tolerance {self.precision}: {self.tolerance.describe()}; rel = abs error / logit range; "
            f"cosine and rel error are the worst over each batch size's samples"
        )
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def raise_if_failed(self, report_path: Path | None = None) -> None:
        if self.passed:
            return
        where = f"; report: {report_path}" if report_path else ""
        raise VerificationError(
            f"{self.precision} parity check failed for {_label(self.candidate)}: "
            f"{'; '.join(self.failures())}{where}"
        )


def format_top1(summary: dict[str, Any]) -> str:
    """Raw top-1, and the figure the tolerance judged with its sample count, or why it judged none."""
    text = f"top-1 {summary['top1']:.0%}"
    samples, decisive = summary.get("samples"), summary.get("decisive")
    if decisive is None or samples is None:  # a summary written before sample counts were recorded
        if summary.get("near_ties") and summary.get("top1_decisive") is not None:
            text += f" ({summary['top1_decisive']:.0%} of decisive samples; {summary['near_ties']} near ties)"
        return text
    if not summary.get("top1_measurable", True):
        return text + f" ({top1_not_measurable(decisive, samples)})"
    if summary.get("near_ties"):
        return text + f" ({summary['top1_decisive']:.0%} over {decisive} decisive of {samples} samples)"
    return text + f" over {samples} samples"


def summary_line(summary: dict[str, Any]) -> str:
    """One line for a report summary: verdict, cosine, rel error and top-1, each with its sample count."""
    state = "passed" if summary["passed"] else "FAILED"
    n = summary.get("samples")
    over = f" (worst of {n} samples)" if n else ""
    return (
        f"{state}: cosine {format_cosine(summary['cosine'])}{over}, max rel {summary['max_rel']:.2e}, "
        f"{format_top1(summary)}"
    )


def format_cosine(value: float) -> str:
    """``0.9997254``, or ``1-1.5e-13`` when seven decimals would round the difference away."""
    return f"1-{1 - value:.1e}" if 1 - 5e-8 < value < 1 else f"{value:.7f}"


def _label(info: dict[str, Any]) -> str:
    providers = info.get("providers")
    extra = f" ({', '.join(providers)})" if providers else ""
    return f"{info.get('backend', '?')} {info.get('precision', '')}".strip() + extra


def write_report(report: VerifyReport, path: str | Path) -> Path:
    """Write the JSON report atomically."""
    from msmlp.fileio import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
