"""Helpers for the service tests: a backend wrapper that can block or fail a batch, a capture of
everything the server logs (tests assert that bad input leaves no traceback there), test tensors."""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np

from msmlp.runtime.base import Backend, BackendInfo

MODEL = "msmlp_micro"
SHAPE = (3, 64, 64)
WAIT_S = 60
POISON = 1.0e4
LIMIT = 1 << 20  # above one 9-image tensor (442 KiB) and two photos as JSON (~500 KB)


class Hooked(Backend):
    """A real backend with a hook before each call: records each batch's ids, can block or raise."""

    name = "hooked"

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[tuple[set[int], bool]] = []  # (ids in pixel [0,0,1], raised)

    def block(self) -> None:
        """Hold the next backend calls until ``gate.set()`` (after the service's warm-up call)."""
        self.entered.clear()
        self.gate.clear()

    def _load(self) -> BackendInfo:
        return dataclasses.replace(self.inner.load().info, backend=self.name)

    def _infer(self, feed):
        x = feed[self.info.input_name]
        self.entered.set()
        self.gate.wait(WAIT_S)
        poisoned = bool((x[:, 0, 0, 0] == POISON).any())
        self.batches.append(({int(v) for v in x[:, 0, 0, 1]}, poisoned))
        if poisoned:
            raise RuntimeError("poisoned batch")
        return self.inner.infer(feed)


class LogCapture(logging.Handler):
    """Every record the server logs (msmlp, uvicorn, asyncio), formatted with any traceback."""

    LOGGERS = ("", "uvicorn", "uvicorn.error")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def tracebacks(self) -> list[str]:
        return [line for line in self.lines if "Traceback" in line]

    def __enter__(self) -> LogCapture:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


def tensors(count: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, *SHAPE), dtype=np.float32)
    x[:, 0, 0, 1] = np.arange(count)  # ids, for the failing-batch test
    return x


def assert_close(got, want) -> None:
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
