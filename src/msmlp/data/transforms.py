"""Image preprocessing shared by every backend: read, resize, centre-crop, normalise, batch.

Follows the usual ImageNet evaluation transform: resize the shorter side to ``size / crop_pct`` with
the model's interpolation, centre-crop to ``size``, scale to [0, 1], normalise by mean/std, N,C,H,W.
Greyscale, palette and RGBA images are converted to RGB (alpha composited on white).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from msmlp.errors import InputError
from msmlp.models.config import DeployConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
MIN_SIDE = 8
MAX_PIXELS = 64_000_000


def load_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Open an image file (or bytes) as RGB; raise :class:`InputError` if it is not a readable image."""
    label = name or (f"{len(source)}-byte upload" if isinstance(source, bytes) else str(source))
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise InputError(f"image {label!r} does not exist or is not a file")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InputError(f"image {label!r} is {img.width}x{img.height}; at most {MAX_PIXELS} pixels")
            img.load()
            rgb = to_rgb(img)
    except Image.DecompressionBombError:
        raise InputError(
            f"image {label!r} declares more than {MAX_PIXELS} pixels (a decompression bomb?); give a smaller image"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"cannot read {label!r} as an image ({type(exc).__name__}); give a JPEG or PNG file"
        ) from exc
    if min(rgb.size) < MIN_SIDE:
        raise InputError(f"image {label!r} is {rgb.width}x{rgb.height}; each side must be >= {MIN_SIDE} px")
    return rgb


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr / max(arr.max(), 1.0) * 255.0).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    return img.convert("RGB")


def interpolation(name: str) -> Image.Resampling:
    """PIL's resampling filter for a config's ``interpolation``, or a clear error."""
    try:
        return _INTERP[name]
    except KeyError:
        raise InputError(f"interpolation {name!r} is not one of {sorted(_INTERP)}") from None


def transform(img: Image.Image, config: DeployConfig) -> np.ndarray:
    """One RGB image to a normalised C,H,W float32 array of the model's input size."""
    h, w = config.image_size
    resample = interpolation(config.interpolation)
    scale_to = math.floor(min(h, w) / config.crop_pct)
    iw, ih = img.size
    if iw <= ih:
        size = (scale_to, max(scale_to, round(ih * scale_to / iw)))
    else:
        size = (max(scale_to, round(iw * scale_to / ih)), scale_to)
    img = img.resize(size, resample)
    left, top = (size[0] - w) // 2, (size[1] - h) // 2
    img = img.crop((left, top, left + w, top + h))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess(images: Sequence[Image.Image | str | Path], config: DeployConfig) -> np.ndarray:
    """Images (PIL or paths) to one N,C,H,W float32 batch."""
    if not images:
        raise InputError("no images given")
    arrays = [transform(im if isinstance(im, Image.Image) else load_image(im), config) for im in images]
    return np.stack(arrays).astype(np.float32, copy=False)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, or else inside its class subfolders (the ImageFolder
    layout of a labelled set, so its training images can calibrate); sorted, or a clear error if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a folder of images")
    files = _images_in(folder)
    if not files:
        files = [f for sub in sorted(p for p in folder.iterdir() if p.is_dir()) for f in _images_in(sub)]
    if not files:
        raise InputError(
            f"folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}), directly or in subfolders"
        )
    return files


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def augmented(images: Iterable[Image.Image], count: int, seed: int = 0) -> list[Image.Image]:
    """``count`` views of a few images: random resized crops (50-100% area) and horizontal flips.

    Lets a small folder stand in for a calibration or parity set; callers say so in their reports.
    """
    base = list(images)
    if not base:
        raise InputError("no images to augment")
    rng = np.random.default_rng(seed)
    out: list[Image.Image] = []
    for i in range(count):
        img = base[i % len(base)]
        if i >= len(base):
            w, h = img.size
            area = rng.uniform(0.5, 1.0) * w * h
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw = min(w, round(math.sqrt(area * ratio)))
            ch = min(h, round(math.sqrt(area / ratio)))
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            img = img.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(img)
    return out


def builtin_images() -> list[Path]:
    """The five sample photographs shipped with msmlp (public domain / CC0, see data/images/README.md).

    The default for verification and calibration when the user gives no folder.
    """
    from importlib import resources

    return list_images(Path(str(resources.files("msmlp.data").joinpath("images"))))
