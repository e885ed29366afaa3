"""Image folders checked before the long work: a ``.jpg`` that is not an image fails in a second, on one
line, instead of after minutes of export, and before anything is written.

Two depths. Up to :data:`FULL_DECODE_UP_TO` files each is fully decoded, cheaply: JPEGs in PIL's draft
mode (the DCT scaled down by up to 8, so every entropy-coded byte is still read and a truncated file
fails), other formats at full size. Larger sets (an evaluation set of 50,000 images) get a header check:
``Image.open`` parses the header and ``verify()`` checks what the format allows (PNG chunk CRCs), which
finds files that are not images at all but not every truncated one; those are found when decoded later.
Files are read in a small thread pool (PIL releases the GIL while decoding).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from msmlp.errors import InputError

FULL_DECODE_UP_TO = 512
DRAFT_SIDE = 32  # JPEG draft target: the smallest DCT scale that still covers 32x32
MAX_WORKERS = 8


def undecodable(files: Sequence[Path], *, full: bool | None = None) -> list[tuple[Path, str]]:
    """The files that do not decode, each with the reason; ``full`` None picks the depth by count."""
    files = [Path(f) for f in files]
    deep = len(files) <= FULL_DECODE_UP_TO if full is None else full
    workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1, len(files)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="msmlp-imagecheck") as pool:
        reasons = list(pool.map(lambda p: _problem(p, deep), files))
    return [(p, why) for p, why in zip(files, reasons) if why is not None]


def require_decodable(files: Sequence[Path], option: str, *, full: bool | None = None) -> None:
    """Raise one :class:`InputError` naming the first file that does not decode and how many do not."""
    bad = undecodable(files, full=full)
    if not bad:
        return
    path, why = bad[0]
    others = f" ({len(bad)} of {len(files)} files fail)" if len(bad) > 1 else ""
    raise InputError(f"{option}: cannot read {str(path)!r} as an image ({why}){others}; remove or replace it")


def _problem(path: Path, full: bool) -> str | None:
    """None if ``path`` decodes, else a short reason."""
    try:
        with Image.open(path) as img:
            if not full:
                img.verify()
                return None
            if img.format == "JPEG":
                img.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
            img.load()
    except Image.DecompressionBombError:
        return "it declares too many pixels (a decompression bomb?)"
    except UnidentifiedImageError:
        return "not an image format PIL can identify"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
