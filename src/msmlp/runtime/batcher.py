"""Dynamic batching: many callers, one backend, one worker thread (after Ray Serve's ``@serve.batch``).

Callers submit one image (C,H,W) or a small batch (N,C,H,W) and get a future. A single worker thread
owns the backend: it waits for the first request, gathers more until ``max_batch`` images are queued or
the oldest request has waited ``max_delay_ms``, runs one backend call and hands each caller its own
slice of the output, in the shape it asked with (C,H,W -> K, N,C,H,W -> N,K).

Guarantees, each tested:

- every request is answered exactly once: with its result, with the batch's exception (an error in a
  batch reaches every caller in that batch and no other; the worker keeps running), or, when the
  batcher is closed without draining, with :class:`BatcherClosedError`;
- memory is bounded: at most ``max_queue`` images wait; beyond that ``submit`` raises
  :class:`~msmlp.errors.OverloadedError` at once instead of queueing;
- a request larger than ``max_batch`` is rejected (not split), so one request is always one backend
  call and its images are never spread over batches that could fail separately.

Metrics stay out of the loop: observers (callables taking :class:`BatchStats`) are called once per batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msmlp.errors import EngineError, InputError, InternalError, OverloadedError
from msmlp.log import logger
from msmlp.runtime.base import Backend


class BatcherClosedError(OverloadedError):
    """The batcher is not running (not started, shutting down, or closed before the request ran)."""


@dataclass(frozen=True)
class BatchStats:
    """What one backend call did; given to observers after the call, before callers are answered."""

    size: int  # images in the batch
    requests: int  # requests merged into it
    queue_s: tuple[float, ...]  # per request: submit -> batch start
    infer_s: float  # the backend call (with input concatenation and output split)
    error: BaseException | None = None


BatchObserver = Callable[[BatchStats], None]


@dataclass
class BatchCounter:
    """A ready-made observer: totals and the batch-size histogram, for reports and tests."""

    batches: int = 0
    images: int = 0
    requests: int = 0
    failed_batches: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def __call__(self, stats: BatchStats) -> None:
        self.batches += 1
        self.images += stats.size
        self.requests += stats.requests
        self.failed_batches += stats.error is not None
        self.sizes[stats.size] = self.sizes.get(stats.size, 0) + 1

    @property
    def mean_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0


class _Request:
    __slots__ = ("array", "future", "n", "single", "t_submit")

    def __init__(self, array: np.ndarray, single: bool) -> None:
        self.array = array
        self.single = single
        self.n = array.shape[0]
        self.future: Future[np.ndarray] = Future()
        self.t_submit = time.perf_counter()


class DynamicBatcher:
    """Merge concurrent requests into backend batches of up to ``max_batch`` images.

    ``max_delay_ms`` bounds how long the oldest queued request waits for company; ``max_queue`` bounds
    the images waiting (not counting the batch in flight). The backend is loaded in the worker thread
    (CUDA contexts are per thread) and closed there on exit if the batcher loaded it.
    """

    def __init__(
        self,
        backend: Backend,
        max_batch: int = 8,
        max_delay_ms: float = 2.0,
        max_queue: int = 256,
        *,
        observers: Iterable[BatchObserver] = (),
        name: str = "msmlp-batcher",
    ) -> None:
        if int(max_batch) < 1:
            raise InputError(f"max_batch must be >= 1, got {max_batch!r}")
        if not 0 <= float(max_delay_ms) <= 60_000:
            raise InputError(f"max_delay_ms must be within 0..60000, got {max_delay_ms!r}")
        if int(max_queue) < int(max_batch):
            raise InputError(
                f"max_queue must be >= max_batch ({max_batch}), got {max_queue!r}; "
                "a smaller queue could never fill a batch"
            )
        self.backend = backend
        self.max_batch = int(max_batch)
        self.max_delay_ms = float(max_delay_ms)
        self.max_queue = int(max_queue)
        self.name = name
        self._observers: list[BatchObserver] = list(observers)
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._queued = 0  # images waiting in _queue
        self._state = "new"  # new -> starting -> running -> closing -> closed
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._owns_backend = False
        self._item_shape: tuple[int, ...] = ()
        self._pad_to = 1
        self._features: Any = None  # a feature graph's FeatureLayout: named outputs, maybe dynamic H/W

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout_s: float | None = 300.0) -> DynamicBatcher:
        """Start the worker, which loads the backend; re-raises a load failure here."""
        with self._cond:
            if self._state != "new":
                raise BatcherClosedError(
                    f"{self.name} was already started (state {self._state}); make a new one"
                )
            self._state = "starting"
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise EngineError(f"{self.name}: the backend did not load within {timeout_s} s")
        if self._start_error is not None:
            self._thread.join()
            with self._cond:
                self._state = "closed"
            raise self._start_error
        return self

    def close(self, drain: bool = True, timeout_s: float | None = None) -> bool:
        """Stop accepting requests; ``drain`` runs what is queued, otherwise it fails with
        :class:`BatcherClosedError`. Returns False if the worker did not stop within ``timeout_s``."""
        dropped: list[_Request] = []
        with self._cond:
            if self._state in ("new", "closed"):
                self._state = "closed"
                return True
            self._state = "closing"
            if not drain:
                dropped = list(self._queue)
                self._queue.clear()
                self._queued = 0
            self._cond.notify_all()
        for req in dropped:
            if req.future.set_running_or_notify_cancel():
                req.future.set_exception(
                    BatcherClosedError(f"{self.name} was closed before this request ran; submit it again")
                )
        assert self._thread is not None
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning(
                "%s: worker still running after %s s (a backend call is slow)", self.name, timeout_s
            )
            return False
        return True

    def __enter__(self) -> DynamicBatcher:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close(drain=True)

    @property
    def running(self) -> bool:
        return self._state == "running" and self._thread is not None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        """Images waiting (not counting the batch being run)."""
        return self._queued

    def add_observer(self, observer: BatchObserver) -> None:
        self._observers.append(observer)

    # -- submission -------------------------------------------------------------------------------
    def submit(self, array: np.ndarray) -> Future[np.ndarray]:
        """Queue one image (C,H,W) or a batch (N,C,H,W, N <= max_batch); the future gives K or N,K."""
        arr = np.asarray(array, dtype=np.float32)
        if self._state != "running":
            raise BatcherClosedError(
                f"{self.name} is not running (state {self._state}); start() it or use it as a context manager"
            )
        single = arr.ndim == len(self._item_shape)
        if single:
            arr = arr[None]
        if self._features is not None and arr.ndim == 4 and arr.shape[1] == self._item_shape[0]:
            self._features.check_size(int(arr.shape[2]), int(arr.shape[3]), "the served model")
        elif arr.ndim != len(self._item_shape) + 1 or arr.shape[1:] != self._item_shape:
            raise InputError(
                f"input shape {tuple(np.shape(array))} does not match the model's {self._item_shape} "
                f"(one image) or (N, {', '.join(map(str, self._item_shape))}) (a batch)"
            )
        if not 1 <= arr.shape[0] <= self.max_batch:
            raise InputError(
                f"a request of {arr.shape[0]} images does not fit the batcher (1..max_batch={self.max_batch}); "
                "split it into smaller requests or raise max_batch"
            )
        req = _Request(arr, single)
        with self._cond:
            if self._state != "running":
                raise BatcherClosedError(f"{self.name} is shutting down; no new requests are accepted")
            if self._queued + req.n > self.max_queue:
                raise OverloadedError(
                    f"request queue is full: {self._queued} images waiting, max_queue={self.max_queue}, "
                    f"this request adds {req.n}; retry later, raise max_queue, or add capacity"
                )
            self._queue.append(req)
            self._queued += req.n
            # Wake the worker only when it can act: idle with work now, or a batch just filled up.
            if len(self._queue) == 1 or self._queued >= self.max_batch:
                self._cond.notify()
        return req.future

    async def infer_async(self, array: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """``submit`` for asyncio code; a timeout or task cancellation withdraws a request not yet run."""
        future = asyncio.wrap_future(self.submit(array))
        if timeout_s is None:
            return await future
        return await asyncio.wait_for(future, timeout_s)

    # -- worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._prepare_backend()
        except BaseException as exc:
            self._start_error = exc
            if self._owns_backend:  # loaded, then refused (e.g. max_batch above its profile)
                self.backend.close()
            self._started.set()
            return
        with self._cond:
            if self._state == "starting":  # close() may have been called meanwhile
                self._state = "running"
        self._started.set()
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._run_batch(batch)
        finally:
            with self._cond:
                self._state = "closed"
                left = list(self._queue)  # only if the loop died (KeyboardInterrupt): answer them anyway
                self._queue.clear()
                self._queued = 0
            for req in left:
                if req.future.set_running_or_notify_cancel():
                    req.future.set_exception(
                        BatcherClosedError(f"{self.name} stopped before this request ran")
                    )
            if self._owns_backend:
                try:
                    self.backend.close()
                except Exception:
                    logger.exception("%s: closing the backend failed", self.name)

    def _prepare_backend(self) -> None:
        if not self.backend.loaded:
            self.backend.load()
            self._owns_backend = True
        shape = tuple(int(d) for d in self.backend.input_shape[1:])
        self._features = self.backend.info.features
        dynamic = self._features is not None and self._features.dynamic
        if any(d < 1 for d in (shape[:1] if dynamic else shape)):
            raise InputError(
                f"{self.name}: the backend's input shape {self.backend.input_shape} has dynamic dimensions "
                "besides the batch; the batcher needs a fixed C,H,W"
            )
        lo, hi = self.backend.batch_range
        if self.max_batch > hi:
            raise InputError(
                f"max_batch={self.max_batch} exceeds the backend's largest batch {hi}; use max_batch <= {hi} "
                "or re-export / rebuild with a larger batch profile"
            )
        self._item_shape = shape
        self._pad_to = max(1, int(lo))

    def _next_batch(self) -> list[_Request] | None:
        """Block until a batch is due; None when closing with nothing left."""
        with self._cond:
            while not self._queue:
                if self._state != "running":
                    return None
                self._cond.wait()
            if self._state == "running":  # while draining, flush at once
                deadline = self._queue[0].t_submit + self.max_delay_ms / 1000.0
                while self._queued < self.max_batch and self._state == "running":
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken: list[_Request] = []
            images = 0
            shape = self._queue[0].array.shape[1:]  # one batch, one input size (dynamic H/W graphs)
            passed: list[_Request] = []  # other sizes, kept in order for the next batches
            while self._queue and images + self._queue[0].n <= self.max_batch:
                req = self._queue.popleft()
                if req.array.shape[1:] != shape:
                    passed.append(req)
                    continue
                self._queued -= req.n
                if req.future.set_running_or_notify_cancel():  # False: the caller withdrew it
                    taken.append(req)
                    images += req.n
            self._queue.extendleft(reversed(passed))
            return taken

    def _run_batch(self, batch: list[_Request]) -> None:
        start = time.perf_counter()
        queue_s = tuple(start - r.t_submit for r in batch)
        size = sum(r.n for r in batch)
        error: BaseException | None = None
        out: np.ndarray | None = None
        try:
            out = self._call_backend(batch, size)
        except BaseException as exc:
            error = exc
        stats = BatchStats(size, len(batch), queue_s, time.perf_counter() - start, error)
        for observer in self._observers:
            try:
                observer(stats)
            except Exception:
                logger.exception("%s: batch observer %r failed", self.name, observer)
        if error is not None:
            for req in batch:
                req.future.set_exception(error)
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: callers told, then stop
                raise error
            return
        assert out is not None
        offset = 0
        for req in batch:
            rows = offset if req.single else slice(offset, offset + req.n)
            req.future.set_result(
                {k: v[rows] for k, v in out.items()} if isinstance(out, dict) else out[rows]
            )
            offset += req.n

    def _call_backend(self, batch: list[_Request], size: int) -> Any:
        arrays = [r.array for r in batch]
        if size < self._pad_to:  # an engine profile whose minimum batch is above 1
            arrays.append(np.zeros((self._pad_to - size, *batch[0].array.shape[1:]), np.float32))
        x = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        if self._features is not None:  # every named output, each split by rows like the logits
            found = self.backend.infer({self.backend.input_name: x}, outputs=self._features.names)
            missing = [n for n in self._features.names if n not in found]
            if missing or any(v.shape[0] != x.shape[0] for v in found.values()):
                raise InternalError(
                    f"{self.name}: backend returned {sorted(found)} for outputs {missing or ''}"
                )
            return {n: np.array(found[n][:size], copy=True) for n in self._features.names}
        out = np.asarray(self.backend(x))
        if out.ndim < 1 or out.shape[0] != x.shape[0]:
            raise InternalError(
                f"{self.name}: backend returned {out.shape[0] if out.ndim else 'a scalar'} results "
                f"for a batch of {x.shape[0]}"
            )
        # One copy per batch: a backend may reuse its output buffer on the next call.
        return np.array(out[:size], copy=True)
