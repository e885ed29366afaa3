"""Strict decoding of request bodies into model inputs: images, raw float32 tensors, JSON tensors.

Strict means a request either decodes to exactly what it declares or is refused with an
:class:`~msmlp.errors.InputError` that says why (the body's structure is checked by the models in
:mod:`msmlp.serve.schemas`; here, its values): JSON data is flat
or nested exactly as its shape (never reshaped from another nesting); values are finite numbers
(NaN/Infinity never reach the batcher, where they would fail a whole batch of other callers); a body
nested too deeply, an image declaring too many pixels, or bytes of the wrong length are input errors.
Every function here is synchronous and CPU-bound: the app runs them in a thread pool.
"""

from __future__ import annotations

import io
import json
import math
import struct
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from msmlp.data.transforms import load_image, transform
from msmlp.errors import InputError
from msmlp.models.config import DeployConfig
from msmlp.serve.errors import PayloadTooLargeError

FLOAT32 = np.dtype("<f4")
# What a malformed image file can make a decoder raise besides the errors load_image already handles.
_DECODER_ERRORS = (EOFError, struct.error, IndexError, KeyError, TypeError, ZeroDivisionError)


def content_type(headers: Mapping[str, str]) -> str:
    """The media type without parameters, lower case; '' when absent."""
    return headers.get("content-type", "").split(";")[0].strip().lower()


# -- images ----------------------------------------------------------------------------------------
def decode_image(data: bytes, label: str, config: DeployConfig, max_pixels: int) -> np.ndarray:
    """Image bytes to the model's normalised C,H,W float32 input.

    The declared size is read from the header before decoding, so a small file that declares a huge
    image (30000x30000 PNG) is refused without allocating it.
    """
    if not data:
        raise InputError(f"the image ({label}) is empty")
    width, height = _declared_size(data, label)
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"image {label!r} declares {width}x{height} pixels; this service takes at most "
            f"{max_pixels} pixels per image: resize it before sending"
        )
    try:
        image = load_image(data, name=label)
    except _DECODER_ERRORS as exc:
        raise InputError(
            f"cannot decode {label!r} as an image ({type(exc).__name__}); send a JPEG or PNG"
        ) from exc
    return transform(image, config)


def _declared_size(data: bytes, label: str) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return int(img.width), int(img.height)
    except Image.DecompressionBombError:
        raise PayloadTooLargeError(
            f"image {label!r} declares more pixels than any decoder here accepts; resize it before sending"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, *_DECODER_ERRORS) as exc:
        raise InputError(
            f"cannot read {label!r} as an image ({type(exc).__name__}); send a JPEG or PNG"
        ) from exc


# -- tensors ----------------------------------------------------------------------------------------
def tensor_from_bytes(body: bytes | memoryview, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Raw little-endian float32 bytes of exactly ``shape``; an own, writable, finite array."""
    expected = math.prod(shape) * FLOAT32.itemsize
    if len(body) != expected:
        raise InputError(f"{what} has {len(body)} bytes; shape {list(shape)} of float32 needs {expected}")
    array = np.frombuffer(body, dtype=FLOAT32).reshape(shape).astype(np.float32)
    return check_finite(array, what)


def parse_json(body: bytes, what: str = "request body") -> Any:
    """JSON text to Python values; NaN/Infinity literals, bad UTF-8 and deep nesting are input errors."""

    def reject(constant: str) -> Any:
        raise InputError(f"{what} holds {constant}, which is not a number; send finite values")

    try:
        return json.loads(body, parse_constant=reject)
    except RecursionError:
        raise InputError(f"{what} is nested too deeply to be a tensor") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int too long
        raise InputError(f"{what} is not valid JSON ({one_error(exc)})") from exc


def one_error(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def tensor_from_json(data: Any, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    """JSON numbers, flat or nested exactly as ``shape`` (``None``: the nesting is the shape)."""
    if not isinstance(data, list) or not data:
        raise InputError(f"{what} data must be a non-empty list of numbers")
    try:
        with np.errstate(all="ignore"):
            array = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InputError(f"{what} data is ragged (rows of different lengths) or holds non-numbers") from None
    if array.dtype.kind not in "iuf":
        found = {"b": "booleans", "U": "strings", "O": "mixed values or nulls"}.get(
            array.dtype.kind, array.dtype
        )
        raise InputError(f"{what} data must be numbers; it holds {found}")
    if shape is None:
        shape = array.shape
    count = math.prod(shape)
    if array.shape != shape and array.shape != (count,):
        raise InputError(
            f"{what} data is nested as {list(array.shape)} but its shape is {list(shape)}; nest it exactly "
            f"as the shape or send it flat ({count} numbers); it is never reshaped"
        )
    with np.errstate(all="ignore"):
        out = array.astype(np.float32).reshape(shape)
    return check_finite(out, what)


def check_finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise InputError(
            f"{what} holds {bad} NaN or infinite value(s) (or numbers beyond float32); send finite numbers"
        )
    return array
