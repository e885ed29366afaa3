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

from msmlp.verify.report import (
    BatchResult,
    VerifyReport,
    format_cosine,
    format_top1,
    summary_line,
    write_report,
)
from msmlp.verify.run import verify
from msmlp.verify.stats import (
    AUGMENTATION,
    DEFINITIONS,
    MIN_DECISIVE,
    MIN_SAMPLES,
    TIE_MARGIN,
    TOLERANCES,
    ParityStats,
    Tolerance,
    compare,
    tolerance_for,
    top1_not_measurable,
)

__all__ = [
    "AUGMENTATION",
    "DEFINITIONS",
    "MIN_DECISIVE",
    "MIN_SAMPLES",
    "TIE_MARGIN",
    "TOLERANCES",
    "BatchResult",
    "ParityStats",
    "Tolerance",
    "VerifyReport",
    "compare",
    "format_cosine",
    "format_top1",
    "summary_line",
    "tolerance_for",
    "top1_not_measurable",
    "verify",
    "write_report",
]
