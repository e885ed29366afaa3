"""Logits to probabilities and top-k ImageNet classes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (first WordNet lemma of each synset)."""
    text = resources.files("msmlp.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in text.splitlines() if line)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "label": self.label, "probability": self.probability}


def topk(logits: np.ndarray, k: int = 5) -> list[list[Prediction]]:
    """Top-k predictions per row of an N,classes logits array."""
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float32))
    probs = softmax(logits)
    k = min(k, logits.shape[1])
    names = imagenet_classes() if logits.shape[1] == 1000 else None
    idx = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [
        [Prediction(int(i), names[i] if names else f"class {int(i)}", float(p[i])) for i in row]
        for row, p in zip(idx, probs)
    ]
