"""Dense-task preprocessing: an image placed in a feature graph's input as :func:`msmlp.features.placement`
says (resized, never centre-cropped, padded at the bottom and right)."""

from __future__ import annotations

from typing import Any

import numpy as np

from msmlp.data.transforms import interpolation
from msmlp.features import Placement


def dense_array(image: Any, place: Placement, config: Any) -> np.ndarray:
    """One RGB PIL image placed as ``place`` says: resized with the model's interpolation, normalised by
    its mean/std, padded with zeros (the mean colour after normalisation), C,H,W float32."""
    img = image.resize((place.resized[1], place.resized[0]), interpolation(config.interpolation))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    out = np.zeros((3, *place.input), np.float32)
    out[:, : place.resized[0], : place.resized[1]] = arr.transpose(2, 0, 1)
    return out
