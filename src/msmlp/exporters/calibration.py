"""Calibration data for INT8: images preprocessed exactly like inference, cached so rebuilds skip it.

The batch is built with :mod:`msmlp.data.transforms`, so calibration sees the same resize, crop and
normalisation as the served model. A folder smaller than the requested size is stretched with random
crops and flips (:func:`~msmlp.data.transforms.augmented`), and the log says so. The cache is an
``.npy`` file plus a ``.json`` sidecar holding a key over everything the batch depends on (the files'
names, sizes and contents, the count, the seed and the model's preprocessing config); any change to
those rebuilds the batch instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from msmlp.data.transforms import augmented, load_image, preprocess
from msmlp.errors import InputError
from msmlp.fileio import atomic_path, write_text_atomic
from msmlp.log import logger
from msmlp.models.registry import DeployConfig

CACHE_VERSION = 1
MAX_SIZE = 4096


def calibration_batch(
    config: DeployConfig,
    files: Sequence[Path],
    size: int,
    *,
    seed: int = 0,
    cache: Path | None = None,
) -> np.ndarray:
    """``size`` calibration inputs (N,C,H,W float32) drawn from ``files``.

    With at least ``size`` files, a seeded random subset is used as is; with fewer, every file is used
    once and random crops/flips of them fill the rest. ``cache`` (an ``.npy`` path) is reused when its
    key matches and rewritten atomically when it does not.
    """
    files = [Path(f) for f in files]
    _check_request(files, size)
    if cache is not None and Path(cache).suffix != ".npy":
        raise InputError(f"calibration cache {str(cache)!r} must be a path ending in .npy")
    chosen = _choose(files, size, seed)
    key = _cache_key(config, files, chosen, size, seed)
    if cache is not None:
        cached = _load_cache(Path(cache), key, (size, *config.input_size))
        if cached is not None:
            return cached
    batch = _build(config, files, chosen, size, seed)
    if cache is not None:
        _save_cache(Path(cache), batch, key, calibration_summary(files, size, seed=seed))
    return batch


def calibration_summary(files: Sequence[Path], size: int, *, seed: int = 0) -> dict:
    """What the batch for these arguments is made of, for export reports."""
    files = [Path(f) for f in files]
    _check_request(files, size)
    chosen = _choose(files, size, seed)
    return {
        "size": size,
        "folder_images": len(files),
        "distinct_images": len(chosen),
        "augmented_views": max(0, size - len(chosen)),
        "seed": seed,
        "files": [f.name for f in chosen],
    }


def split_calibration(files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split sorted images into a calibration half (the first ceil(n/2)) and a held-out half.

    Verification of an INT8 graph must not use the images it was calibrated on; this is the split
    used when one folder serves both.
    """
    ordered = sorted(Path(f) for f in files)
    if len(ordered) < 2:
        raise InputError(
            f"need at least 2 images to split into calibration and held-out sets, got {len(ordered)}; "
            "give a folder with more images"
        )
    cut = math.ceil(len(ordered) / 2)
    return ordered[:cut], ordered[cut:]


def _check_request(files: list[Path], size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise InputError(f"calibration size {size!r} is not an integer in 1..{MAX_SIZE}")
    if not files:
        raise InputError("no calibration images given; pass --calib DIR with JPEG or PNG images")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"calibration image {missing[0]!r} does not exist or is not a file")


def _choose(files: list[Path], size: int, seed: int) -> list[Path]:
    """The distinct files used: all of them if there are too few, else a seeded subset in folder order."""
    if len(files) <= size:
        return list(files)
    picked = np.random.default_rng(seed).choice(len(files), size=size, replace=False)
    return [files[i] for i in sorted(picked)]


def _build(config: DeployConfig, files: list[Path], chosen: list[Path], size: int, seed: int) -> np.ndarray:
    if len(chosen) >= size:
        logger.info("calibration: %d of %d images", size, len(files))
        return preprocess(chosen, config)
    logger.info(
        "calibration: the folder has %d images for %d calibration inputs; adding %d random crops/flips "
        "of them (a larger folder gives a more representative calibration)",
        len(chosen),
        size,
        size - len(chosen),
    )
    views = augmented([load_image(f) for f in chosen], size, seed)
    return preprocess(views, config)


def _cache_key(config: DeployConfig, files: list[Path], chosen: list[Path], size: int, seed: int) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"version": CACHE_VERSION, "size": size, "seed": seed, "config": _preprocess_fields(config)},
            sort_keys=True,
        ).encode()
    )
    for f in files:  # the listing decides the subset
        h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    for f in chosen:  # the contents decide the pixels
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _preprocess_fields(config: DeployConfig) -> dict:
    """Only the config fields that change the pixels fed to the model."""
    return {
        "input_size": list(config.input_size),
        "mean": list(config.mean),
        "std": list(config.std),
        "interpolation": config.interpolation,
        "crop_pct": config.crop_pct,
    }


def _sidecar(cache: Path) -> Path:
    return cache.with_name(cache.name + ".json")


def _load_cache(cache: Path, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    side = _sidecar(cache)
    if not (cache.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
        if meta.get("key") != key:
            logger.info("calibration cache %s is for other images or settings; rebuilding it", cache)
            return None
        batch = np.load(cache, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("calibration cache %s is unreadable (%s); rebuilding it", cache, exc)
        return None
    if batch.shape != shape or batch.dtype != np.float32:
        logger.warning(
            "calibration cache %s holds %s %s, expected %s float32; rebuilding it",
            cache,
            batch.shape,
            batch.dtype,
            shape,
        )
        return None
    logger.info("calibration: reusing %s (%d inputs)", cache, len(batch))
    return batch


def _save_cache(cache: Path, batch: np.ndarray, key: str, summary: dict) -> None:
    """Old sidecar out, array in, then the sidecar that vouches for it; each replaced atomically."""
    side = _sidecar(cache)
    side.unlink(missing_ok=True)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.save(fh, batch, allow_pickle=False)
    write_text_atomic(side, json.dumps({"key": key, "shape": list(batch.shape), **summary}, indent=2))
