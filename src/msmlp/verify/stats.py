"""Parity statistics and the tolerances each precision must meet (definitions: :mod:`msmlp.verify`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from msmlp.errors import InputError

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


def top1_not_measurable(decisive: int, samples: int) -> str:
    return f"top-1 not measurable here ({decisive} of {samples} samples decisive; needs {MIN_DECISIVE})"


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise InputError(f"precision {precision!r} is not one of {', '.join(TOLERANCES)}") from None
