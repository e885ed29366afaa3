"""Which images verify which artefact: the verification set, the INT8 held-out split, and the check
that ``--val`` shares no image with the calibration set.

An INT8 graph is never verified on images it was calibrated on. This module is the one place that
decides the split at export time and re-applies it when ``msmlp verify`` checks an INT8 file later.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

from msmlp.artifacts import ArtifactInfo
from msmlp.data.transforms import builtin_images, list_images
from msmlp.errors import InputError
from msmlp.fileio import file_sha256
from msmlp.models.config import DeployConfig


def verification_images(folder: Path | None) -> list[Path]:
    """``--images`` (every file decodes, checked cheaply up front), or the built-in photos."""
    from msmlp.data.imagecheck import require_decodable

    if not folder:
        return builtin_images()
    files = list_images(folder)
    require_decodable(files, "--images")
    return files


def int8_image_split(
    calib_folder: Path | None, images_folder: Path | None
) -> tuple[list[Path], list[Path], str]:
    """Calibration images and held-out verification images, never the same content.

    When the verification set is (a subset of) the calibration set, as with the default built-in photos
    for both, the sorted calibration files are split: the first ceil(n/2) calibrate, the rest verify.
    Otherwise verification images whose content also appears in the calibration set are dropped.
    """
    calib = list_images(calib_folder) if calib_folder else builtin_images()
    verify_files = verification_images(images_folder)
    calib_hashes = {file_sha256(p) for p in calib}
    verify_hashes = {file_sha256(p): p for p in verify_files}
    if set(verify_hashes) <= calib_hashes:
        if len(calib) < 2:
            raise InputError(
                f"the calibration folder holds {len(calib)} image; INT8 needs at least 2 so that one can be "
                "held out for verification (or pass --images DIR with other images)"
            )
        ordered = sorted(calib, key=lambda p: p.name)
        cut = math.ceil(len(ordered) / 2)
        calib, held = ordered[:cut], ordered[cut:]
        note = (
            f"INT8 held-out split: verification images are also calibration images, so the first {cut} of "
            f"{len(ordered)} sorted files calibrate ({_names(calib)}) and the rest verify ({_names(held)})"
        )
    else:
        held = [p for h, p in verify_hashes.items() if h not in calib_hashes]
        dropped = len(verify_files) - len(held)
        note = f"INT8 held-out images: {_names(held)}" + (
            f"; {dropped} verification image(s) also used for calibration were left out" if dropped else ""
        )
    return calib, sorted(held, key=lambda p: p.name), note


def held_out_images(artifact: ArtifactInfo, images: Sequence[Path]) -> tuple[list[Path], str]:
    """For ``msmlp verify`` of an INT8 file: drop the images it was calibrated on, as recorded."""
    used = set((artifact.calibration or {}).get("sha256") or [])
    if not used:
        return list(images), "calibration images unknown (no model.json entry): held-out status not checked"
    kept = [p for p in images if file_sha256(p) not in used]
    if not kept:
        raise InputError(
            "every verification image was used to calibrate this INT8 graph; pass --images DIR with others"
        )
    return kept, f"INT8 held-out: {len(images) - len(kept)} calibration image(s) left out"


def val_overlap(val: Sequence[Path], calib_folder: Path | None) -> list[tuple[Path, Path]]:
    """(val image, calibration image) pairs with the same content; sizes first, so few files are hashed."""
    calib = list_images(calib_folder) if calib_folder else builtin_images()
    by_size: dict[int, list[Path]] = {}
    for path in calib:
        by_size.setdefault(path.stat().st_size, []).append(path)
    found = []
    hashes: dict[Path, str] = {}
    for path in val:
        same_size = by_size.get(path.stat().st_size)
        if not same_size:
            continue
        digest = file_sha256(path)
        for other in same_size:
            if other not in hashes:
                hashes[other] = file_sha256(other)
            if hashes[other] == digest:
                found.append((path, other))
                break
    return found


def calibration_key(config: DeployConfig, files: Sequence[Path], size: int, seed: int) -> str:
    """Short hash of what the calibration batch depends on (image contents, size, seed, preprocessing)."""
    digest = hashlib.sha256()
    for p in sorted(files, key=lambda p: p.name):
        digest.update(file_sha256(p).encode())
    pre = (config.input_size, config.mean, config.std, config.interpolation, config.crop_pct)
    digest.update(repr((size, seed, pre)).encode())
    return digest.hexdigest()[:12]


def _names(paths: Sequence[Path]) -> str:
    return ", ".join(p.name for p in paths)
