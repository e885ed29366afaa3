"""One protocol for every backend (PyTorch, ONNX Runtime, TensorRT), after Polygraphy's runners.

A backend is loaded lazily (``load``), runs ``infer`` on a dict of named arrays, and is released by
``close``; it is a context manager, and it times every call. The comparator and the batcher only
ever see this protocol.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from msmlp.errors import InputError, InternalError


class Backend(ABC):
    """Base class: subclasses implement ``_load``, ``_infer`` and ``_close``.

    Attributes every loaded backend sets: ``input_name``, ``output_name``, ``input_shape`` (with the
    batch as ``-1``), ``batch_range`` (min, max) and ``precision``.
    """

    name: str = "backend"

    def __init__(self) -> None:
        self.loaded = False
        self.input_name = "input"
        self.output_name = "logits"
        self.input_shape: tuple[int, ...] = (-1, 3, 224, 224)
        self.batch_range: tuple[int, int] = (1, 1 << 30)
        self.precision = "fp32"
        self.last_infer_s: float | None = None
        self.infer_times_s: list[float] = []

    # -- lifecycle --------------------------------------------------------------------------------
    def load(self) -> Backend:
        if not self.loaded:
            self._load()
            self.loaded = True
        return self

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- inference --------------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. ``feed`` maps input names to arrays; returns output names to arrays."""
        if not self.loaded:
            self.load()
        array = self.check_feed(feed)
        start = time.perf_counter()
        out = self._infer({self.input_name: array})
        self.last_infer_s = time.perf_counter() - start
        self.infer_times_s.append(self.last_infer_s)
        got = out[self.output_name].shape[0]
        if got != array.shape[0]:
            raise InternalError(f"{self.name}: {array.shape[0]} inputs gave {got} outputs")
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Convenience: one input array in, the logits out."""
        return self.infer({self.input_name: batch})[self.output_name]

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        if set(feed) != {self.input_name}:
            raise InputError(
                f"{self.name}: inputs {sorted(feed)} do not match the model's input {[self.input_name]!r}"
            )
        array = np.ascontiguousarray(feed[self.input_name], dtype=np.float32)
        expected = self.input_shape
        if array.ndim != len(expected) or any(e not in (-1, g) for e, g in zip(expected, array.shape)):
            raise InputError(
                f"{self.name}: input shape {tuple(array.shape)} does not match {expected} "
                "(-1 marks the batch axis; the spatial size is fixed by the model)"
            )
        lo, hi = self.batch_range
        if not lo <= array.shape[0] <= hi:
            raise InputError(
                f"{self.name}: batch {array.shape[0]} is outside the supported range {lo}..{hi}; "
                "split the batch or rebuild with a wider --batch MIN,OPT,MAX"
            )
        return array

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "precision": self.precision,
            "input": self.input_name,
            "output": self.output_name,
            "input_shape": list(self.input_shape),
            "batch_range": list(self.batch_range),
        }
