"""Logits to probabilities and top-k classes, named by the model's own labels (``DeployConfig.labels``)
or ImageNet's; and reading a labels file (``--labels``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from msmlp.errors import InputError


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


def class_names(num_classes: int, labels: Sequence[str] = ()) -> tuple[str, ...]:
    """The name of each class: the model's own ``labels`` when it has them, ImageNet's for 1000
    classes, else ``class <i>``."""
    if labels and len(labels) == num_classes:
        return tuple(labels)
    if num_classes == 1000:
        return imagenet_classes()
    return tuple(f"class {i}" for i in range(num_classes))


def topk(logits: np.ndarray, k: int = 5, labels: Sequence[str] = ()) -> list[list[Prediction]]:
    """Top-k predictions per row of an N,classes logits array, named as :func:`class_names` says."""
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float32))
    probs = softmax(logits)
    k = min(k, logits.shape[1])
    names = class_names(logits.shape[1], labels)
    idx = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[Prediction(int(i), names[i], float(p[i])) for i in row] for row, p in zip(idx, probs)]


def read_labels(path: str | Path, option: str = "--labels") -> tuple[str, ...]:
    """A labels file: one name per line, a JSON list of names, or a JSON object ``{index: name}``
    whose keys are exactly 0..N-1. Names must be distinct and not empty."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {str(path)!r} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{option} {str(path)!r} is not readable UTF-8 text ({type(exc).__name__})") from exc
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        names = _json_labels(path, text, option)
    else:
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names or any(not n for n in names):
        raise InputError(f"{option} {str(path)!r} names no classes; give one name per line, in index order")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{option} {str(path)!r} names class {twice!r} twice; class names must be distinct")
    return names


def _json_labels(path: Path, text: str, option: str) -> tuple[str, ...]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if isinstance(data, list) and all(isinstance(n, str) for n in data):
        return tuple(n.strip() for n in data)
    if isinstance(data, dict) and all(isinstance(n, str) for n in data.values()):
        keys = sorted(data, key=lambda k: int(k) if str(k).isdigit() else -1)
        if [str(k) for k in keys] != [str(i) for i in range(len(data))]:
            raise InputError(
                f"{option} {str(path)!r}: the keys of a JSON object of labels must be the class indices "
                f"0..{len(data) - 1}, each once"
            )
        return tuple(data[k].strip() for k in keys)
    raise InputError(
        f"{option} {str(path)!r} must hold a JSON list of names or an object {{index: name}} of strings"
    )
