"""Parity: does a backend compute what PyTorch FP32 computes, on real images, at each batch size?

Definitions (also written into every report):

- abs error: ``|candidate - reference|`` per logit.
- rel error: abs error divided by the *range* (max - min) of that sample's reference logits, so the
  figure does not explode near zero logits and is comparable across models.
- cosine: cosine similarity between a sample's two logit vectors; ``cosine`` is the minimum over
  samples (the worst one), ``cosine_mean`` the mean.
- top-1: fraction of samples whose arg-max class agrees. top-5: mean fraction of the reference's
  five best classes that are also among the candidate's five best.
- near tie: a sample whose reference top-1 logit leads the runner-up by less than ``TIE_MARGIN`` (1%)
  of its logit range. Swapping two classes that close says nothing about the backend, so the top-1
  *tolerance* is checked on the other, decisive samples (``top1_decisive``); raw ``top1`` and the number
  of near ties are always reported. Synthetic weights produce many near ties; trained ones few.
- measurable: a top-1 figure over a handful of samples is luck, not a statistic. The top-1 tolerance
  applies only when at least ``MIN_DECISIVE`` (8) samples are decisive; otherwise the report says
  "top-1 not measurable here (n of N samples decisive)" and cosine / relative error decide alone.

Every batch size runs on at least ``samples`` inputs (default ``MIN_SAMPLES``, 16): the images first,
then :func:`augmented` views (random crops and flips of the same images) up to a whole number of
batches; the report says how many samples were originals and how many views, and each tolerance's
message names the number of samples it was judged on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from msmlp.data.transforms import augmented, load_image, preprocess, to_rgb
from msmlp.errors import InputError, VerificationError
from msmlp.log import logger
from msmlp.models.config import DeployConfig
from msmlp.runtime.base import Backend

DEFINITIONS = {
    "rel_error": "|candidate - reference| / range (max - min) of that sample's reference logits",
    "cosine": "minimum over samples of the cosine similarity of the two logit vectors",
    "top1": "fraction of samples whose arg-max class agrees",
    "top1_decisive": "top-1 agreement over samples that are not near ties (the one the tolerance checks)",
    "near_ties": "samples whose reference top-1 leads the runner-up by < 1% of the logit range",
    "decisive": "samples that are not near ties; top-1 is only judged when at least 8 are decisive",
    "top5": "mean fraction of the reference's top-5 classes found in the candidate's top-5",
}
TIE_MARGIN = 0.01
MIN_DECISIVE = 8  # fewer decisive samples than this: the top-1 tolerance is not measurable
MIN_SAMPLES = 16  # samples per batch size (originals, then augmented views)
AUGMENTATION = "random resized crops (50-100% area, aspect 3/4-4/3) and horizontal flips"


@dataclass(frozen=True)
class ParityStats:
    samples: int
    max_abs: float
    mean_abs: float
    max_rel: float
    mean_rel: float
    cosine: float
    cosine_mean: float
    top1: float
    top5: float
    top1_decisive: float
    near_ties: int
    decisive: int = -1  # samples that are not near ties (-1: unknown, from an older caller)

    @property
    def top1_measurable(self) -> bool:
        return self.decisive >= MIN_DECISIVE

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray) -> ParityStats:
    """Statistics of ``candidate`` against ``reference`` logits, both N x classes (see module doc)."""
    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    out = np.atleast_2d(np.asarray(candidate, dtype=np.float64))
    if ref.shape != out.shape:
        raise InputError(f"cannot compare logits of shape {out.shape} with reference shape {ref.shape}")
    if ref.size == 0:
        raise InputError("cannot compare empty logits")
    broken = ~np.isfinite(out).all(axis=1)  # NaN/Inf rows (an overflowing FP16 graph) fail every metric
    out = np.where(np.isfinite(out), out, 0.0)
    err = np.abs(out - ref)
    err[broken] = np.inf
    span = np.ptp(ref, axis=1, keepdims=True)
    rel = err / np.where(span > 0, span, 1.0)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(norms > 0, (ref * out).sum(1) / np.where(norms > 0, norms, 1.0), 0.0)
    cos[broken] = -1.0
    k = min(5, ref.shape[1])
    ref_top = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    out_top = np.argsort(-out, axis=1, kind="stable")[:, :k]
    top1 = (ref_top[:, 0] == out_top[:, 0]) & ~broken
    overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(ref_top, out_top)]) * ~broken
    if ref.shape[1] > 1:
        best_two = -np.sort(-ref, axis=1)[:, :2]
        tie = (best_two[:, 0] - best_two[:, 1]) < TIE_MARGIN * span[:, 0]
    else:
        tie = np.zeros(ref.shape[0], dtype=bool)
    decisive = top1[~tie] if (~tie).any() else top1  # all near ties: show the raw figure (not judged)
    return ParityStats(
        samples=int(ref.shape[0]),
        max_abs=float(err.max()),
        mean_abs=float(err.mean()),
        max_rel=float(rel.max()),
        mean_rel=float(rel.mean()),
        cosine=float(cos.min()),
        cosine_mean=float(cos.mean()),
        top1=float(top1.mean()),
        top5=float(overlap.mean()),
        top1_decisive=float(decisive.mean()),
        near_ties=int(tie.sum()),
        decisive=int((~tie).sum()),
    )


@dataclass(frozen=True)
class Tolerance:
    """Limits a precision must meet; ``None`` means not checked."""

    max_rel: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None

    def failures(self, stats: ParityStats) -> list[str]:
        """Broken limits, each naming the number of samples it was judged on."""
        found = []
        n = stats.samples
        if self.max_rel is not None and not stats.max_rel <= self.max_rel:
            found.append(f"max rel error {stats.max_rel:.3g} > {self.max_rel:g} (worst of {n} samples)")
        if self.min_cosine is not None and not stats.cosine >= self.min_cosine:
            found.append(f"cosine {stats.cosine:.7f} < {self.min_cosine} (worst of {n} samples)")
        if self.min_top1 is not None and stats.top1_measurable and not stats.top1_decisive >= self.min_top1:
            found.append(
                f"top-1 agreement {stats.top1_decisive:.1%} < {self.min_top1:.0%} "
                f"over {stats.decisive} decisive of {n} samples"
            )
        return found

    def notes(self, stats: ParityStats) -> list[str]:
        """What could not be judged here, and why (never a failure)."""
        if self.min_top1 is not None and not stats.top1_measurable:
            return [top1_not_measurable(stats.decisive, stats.samples)]
        return []

    def describe(self) -> str:
        parts = []
        if self.max_rel is not None:
            parts.append(f"max rel error <= {self.max_rel:g} of the logit range")
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine}")
        if self.min_top1 is not None:
            parts.append(
                f"top-1 agreement >= {self.min_top1:.0%} over decisive samples "
                f"(near ties excluded; judged when >= {MIN_DECISIVE} are decisive)"
            )
        return ", ".join(parts)


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-4, min_cosine=0.99999, min_top1=1.0),
    "fp16": Tolerance(min_cosine=0.9995, min_top1=0.99),
    "bf16": Tolerance(min_cosine=0.9995, min_top1=0.99),  # bf16 compute (OpenVINO hint): as strict as FP16
    "int8": Tolerance(min_cosine=0.99, min_top1=0.95),
}


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


def verify(
    reference: Backend,
    candidate: Backend,
    images: Sequence[str | Path | Image.Image],
    precision: str = "fp32",
    batch_sizes: Sequence[int] = (1, 8),
    *,
    config: DeployConfig | None = None,
    seed: int = 0,
    report_path: str | Path | None = None,
    note: str = "",
    raise_on_failure: bool = True,
    samples: int = MIN_SAMPLES,
) -> VerifyReport:
    """Run both backends on the same preprocessed images at each batch size and compare the logits.

    ``samples``: the least number of inputs per batch size (the images, then augmented views, up to
    whole batches), so that every figure rests on enough samples. Writes the JSON report (if
    ``report_path``) before raising :class:`VerificationError` on a broken tolerance.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InputError(f"verification samples per batch size must be a positive integer, got {samples!r}")
    tolerance = tolerance_for(precision)
    pictures, names = _open_images(images)
    reference.load()
    candidate.load()
    config = config or reference.info.config
    if config is None:
        raise InputError("verify needs the model's DeployConfig for preprocessing; pass config=")
    report = VerifyReport(
        precision=precision,
        tolerance=tolerance,
        reference=reference.describe(),
        candidate=candidate.describe(),
        images=names,
        seed=seed,
        note=note,
        min_samples=samples,
    )
    for batch_size in _check_batch_sizes(batch_sizes, candidate):
        report.results.append(
            _run_batch_size(reference, candidate, pictures, batch_size, config, seed, tolerance, samples)
        )
    if report_path is not None:
        write_report(report, report_path)
    if raise_on_failure:
        report.raise_if_failed(Path(report_path) if report_path else None)
    return report


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


def top1_not_measurable(decisive: int, samples: int) -> str:
    return f"top-1 not measurable here ({decisive} of {samples} samples decisive; needs {MIN_DECISIVE})"


def format_cosine(value: float) -> str:
    """``0.9997254``, or ``1-1.5e-13`` when seven decimals would round the difference away."""
    return f"1-{1 - value:.1e}" if 1 - 5e-8 < value < 1 else f"{value:.7f}"


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise InputError(f"precision {precision!r} is not one of {', '.join(TOLERANCES)}") from None


def _run_batch_size(
    reference: Backend,
    candidate: Backend,
    pictures: list[Image.Image],
    batch_size: int,
    config: DeployConfig,
    seed: int,
    tolerance: Tolerance,
    samples: int,
) -> BatchResult:
    count = batch_size * math.ceil(max(len(pictures), samples) / batch_size)
    views = augmented(pictures, count, seed=seed)
    inputs = preprocess(views, config)
    refs, outs = [], []
    for start in range(0, count, batch_size):
        batch = inputs[start : start + batch_size]
        refs.append(reference(batch))
        outs.append(candidate(batch))
    stats = compare(np.concatenate(refs), np.concatenate(outs))
    logger.debug("batch %d: %s", batch_size, stats)
    originals = min(len(pictures), count)
    return BatchResult(
        batch_size,
        count // batch_size,
        originals,
        count - originals,
        stats,
        tolerance.failures(stats),
        tolerance.notes(stats),
    )


def _check_batch_sizes(batch_sizes: Sequence[int], candidate: Backend) -> list[int]:
    sizes = list(dict.fromkeys(batch_sizes))
    lo, hi = candidate.batch_range
    bad = [b for b in sizes if not (isinstance(b, int) and lo <= b <= hi)]
    if not sizes or bad:
        raise InputError(
            f"verification batch sizes {bad or sizes} are outside the candidate's batch range {lo}..{hi}"
        )
    return sizes


def _open_images(images: Sequence[str | Path | Image.Image]) -> tuple[list[Image.Image], list[str]]:
    if not images:
        raise InputError("verification needs at least one image")
    pictures, names = [], []
    for i, item in enumerate(images):
        if isinstance(item, Image.Image):
            pictures.append(to_rgb(item))  # the same RGBA/greyscale handling as files get
            names.append(f"image {i}")
        else:
            pictures.append(load_image(item))
            names.append(Path(item).name)
    return pictures, names


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
