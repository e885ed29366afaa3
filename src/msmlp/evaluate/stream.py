"""Stream a labelled set through several backends: decode once in a pool of threads, run every candidate on
the same batch, keep a few bytes per image and candidate.

Memory is bounded whatever the dataset size: at most ``window`` decoded images are in flight, one batch per
distinct preprocessing is held, and per image only the top-1 prediction and two correctness bits are kept
(the logits of a batch are dropped once scored). Decoding and inference are timed separately: decoding as
the seconds the workers spent (and the wall time of the run), inference per candidate as backend seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msmlp.data.transforms import load_image, transform
from msmlp.errors import InputError
from msmlp.evaluate.datasets import LabelledSet
from msmlp.models.config import DeployConfig
from msmlp.runtime.base import Backend

TOP_K = 5
UNREADABLE_LISTED = 1000  # unreadable files named in the report; the count is always complete


@dataclass
class Candidate:
    """One loaded backend to score, with the preprocessing of its own artefact."""

    label: str
    backend: Backend
    config: DeployConfig
    classes: int
    describe: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tally:
    """Per-image results of one candidate: the top-1 index and whether top-1 / top-k were right."""

    size: int
    pred: np.ndarray = field(init=False)
    top1: np.ndarray = field(init=False)
    topk: np.ndarray = field(init=False)
    infer_s: float = 0.0
    calls: int = 0

    def __post_init__(self) -> None:
        self.pred = np.full(self.size, -1, np.int32)
        self.top1 = np.zeros(self.size, np.bool_)
        self.topk = np.zeros(self.size, np.bool_)

    def score(self, rows: np.ndarray, logits: np.ndarray, labels: np.ndarray, k: int) -> None:
        k = min(k, logits.shape[1])
        best = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        self.pred[rows] = np.argmax(logits, axis=1)
        self.top1[rows] = self.pred[rows] == labels
        self.topk[rows] = (best == labels[:, None]).any(axis=1)


@dataclass
class Progress:
    """What the run got through; filled as it goes, so an interrupted run still has its counts."""

    done: np.ndarray  # bool per image: decoded and scored by every candidate
    unreadable: list[dict[str, str]] = field(default_factory=list)
    unreadable_count: int = 0
    decode_s: float = 0.0  # seconds summed over the decoding workers
    wall_s: float = 0.0
    partial: bool = False


def evaluate(
    data: LabelledSet,
    candidates: list[Candidate],
    *,
    batch: int = 32,
    workers: int = 2,
    strict: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Progress, list[Tally]]:
    """Score every candidate on every readable image of ``data``.

    KeyboardInterrupt is caught: the result then says ``partial`` and covers the images done so far.
    ``strict`` turns the first unreadable image into an :class:`InputError`.
    """
    tallies = [Tally(len(data)) for _ in candidates]
    progress = Progress(done=np.zeros(len(data), np.bool_))
    configs: list[DeployConfig] = []  # one decode per distinct preprocessing (configs hold a dict: no hash)
    for cand in candidates:
        if cand.config not in configs:
            configs.append(cand.config)
    labels = np.asarray(data.labels, np.int64)
    start = time.perf_counter()
    try:
        for rows, arrays in _batches(data, configs, progress, batch, workers, strict):
            for cand, tally in zip(candidates, tallies):
                x = arrays[configs.index(cand.config)]
                t0 = time.perf_counter()
                logits = _infer(cand, x)
                tally.infer_s += time.perf_counter() - t0
                tally.calls += 1
                tally.score(rows, logits, labels[rows], TOP_K)
            progress.done[rows] = True
            if on_batch:
                on_batch(len(rows))
    except KeyboardInterrupt:
        progress.partial = True
    finally:
        progress.wall_s = time.perf_counter() - start
    return progress, tallies


def _infer(cand: Candidate, x: np.ndarray) -> np.ndarray:
    """Logits for a batch, split where the backend's batch range is smaller; checked against the classes."""
    lo, hi = cand.backend.batch_range
    parts = [cand.backend(x[i : i + hi]) for i in range(0, len(x), hi)] if len(x) >= lo else []
    if not parts:  # a fixed-batch engine larger than the last batch: pad, then drop the padding
        pad = np.concatenate([x, np.repeat(x[-1:], lo - len(x), axis=0)])
        parts = [cand.backend(pad)[: len(x)]]
    logits = np.concatenate(parts).astype(np.float32, copy=False)
    if logits.ndim != 2 or logits.shape[1] != cand.classes:
        raise InputError(f"{cand.label} returned logits of shape {logits.shape}, not (N, {cand.classes})")
    return logits


def _batches(
    data: LabelledSet, configs: list[DeployConfig], progress: Progress, batch: int, workers: int, strict: bool
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Decoded batches in dataset order: (row indices, one N,C,H,W array per preprocessing)."""
    window = max(2 * batch, 4 * workers)  # decoded images in flight at most
    pending: deque[tuple[int, Future[tuple[list[np.ndarray], float]]]] = deque()
    rows: list[int] = []
    arrays: list[list[np.ndarray]] = [[] for _ in configs]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="msmlp-decode")
    try:
        for i in range(len(data)):
            pending.append((i, pool.submit(_decode, data.paths[i], configs)))
            if len(pending) < window:
                continue
            yield from _drain(pending, 1, data, progress, rows, arrays, batch, strict)
        yield from _drain(pending, len(pending), data, progress, rows, arrays, batch, strict)
        if rows:
            yield _take(rows, arrays)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _drain(
    pending: deque[tuple[int, Future[tuple[list[np.ndarray], float]]]],
    count: int,
    data: LabelledSet,
    progress: Progress,
    rows: list[int],
    arrays: list[list[np.ndarray]],
    batch: int,
    strict: bool,
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    for _ in range(count):
        i, future = pending.popleft()
        try:
            views, seconds = future.result()
        except InputError as exc:
            if strict:
                raise InputError(
                    f"{exc} (--strict: unreadable images are fatal; drop it to skip them)"
                ) from exc
            progress.unreadable_count += 1
            if len(progress.unreadable) < UNREADABLE_LISTED:
                progress.unreadable.append({"path": str(data.paths[i]), "error": str(exc)})
            continue
        progress.decode_s += seconds
        rows.append(i)
        for held, view in zip(arrays, views):
            held.append(view)
        if len(rows) == batch:
            yield _take(rows, arrays)


def _take(rows: list[int], arrays: list[list[np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
    out = np.asarray(rows, np.int64), [np.stack(a) for a in arrays]
    rows.clear()
    for a in arrays:
        a.clear()
    return out


def _decode(path: Path, configs: list[DeployConfig]) -> tuple[list[np.ndarray], float]:
    """Runs in a worker: read one image and preprocess it once per distinct config."""
    t0 = time.perf_counter()
    image = load_image(path)
    views = [transform(image, c) for c in configs]
    return views, time.perf_counter() - t0
