"""Run a reference and a candidate backend on the same real images at each batch size and compare."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from msmlp.data.transforms import augmented, load_image, preprocess, to_rgb
from msmlp.errors import InputError
from msmlp.log import logger
from msmlp.models.config import DeployConfig
from msmlp.runtime.base import Backend
from msmlp.verify.report import BatchResult, VerifyReport, write_report
from msmlp.verify.stats import MIN_SAMPLES, Tolerance, compare, tolerance_for


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
