"""Concurrent load: closed-loop clients through the dynamic batcher over a backend, or over HTTP against
a running msmlp service. Bounded by the number of requests and a timeout; errors are counted by kind."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msmlp.bench.timing import LatencyStats, make_batch, summarize
from msmlp.errors import InputError, ServiceError
from msmlp.log import logger
from msmlp.runtime.base import Backend

PROBE_TIMEOUT_S = 5.0


@dataclass
class ConcurrencyStats:
    """Closed-loop load: ``clients`` callers each send one image at a time, latency per request."""

    target: str  # "batcher" or the URL
    clients: int
    requests: int  # sent
    answered: int
    errors: dict[str, int]
    wall_s: float
    latency: LatencyStats | None  # over answered requests, batch=1 each
    throughput_ips: float  # answered images / wall time
    batcher: dict[str, Any] = field(default_factory=dict)  # max_batch, max_delay_ms, mean batch size
    samples_ms: list[float] = field(default_factory=list)  # every answered request's latency


def _closed_loop(
    clients: int, requests: int, call: Callable[[int, int], None], timeout_s: float, progress: bool, desc: str
) -> tuple[list[float], dict[str, int], float, int]:
    """``clients`` threads share ``requests`` calls, one at a time each; returns latencies (s), error
    counts by kind, wall time and the number sent. Bounded by ``requests`` and ``timeout_s``."""
    from tqdm import tqdm

    if clients < 1 or requests < 1:
        raise InputError(f"concurrency needs clients >= 1 and requests >= 1, got {clients} and {requests}")
    lock = threading.Lock()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = 0
    deadline = time.perf_counter() + timeout_s

    def client(index: int) -> None:
        nonlocal sent
        while True:
            with lock:
                if sent >= requests or time.perf_counter() > deadline:
                    return
                seq = sent
                sent += 1
            t0 = time.perf_counter()
            try:
                call(index, seq)
            except Exception as exc:  # counted and reported, never raised out of a client thread
                logger.debug("request %d failed", seq, exc_info=True)
                with lock:
                    errors[getattr(exc, "kind", type(exc).__name__)] += 1
            else:
                with lock:
                    latencies.append(time.perf_counter() - t0)
            bar.update()

    with tqdm(
        total=requests, desc=desc, unit="req", disable=not progress or not sys.stderr.isatty(), leave=False
    ) as bar:
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.perf_counter()) + 30.0)
        wall = time.perf_counter() - start
    return latencies, dict(errors), wall, sent


def load_batcher(
    backend: Backend,
    clients: int,
    requests: int,
    *,
    max_batch: int = 8,
    max_delay_ms: float = 2.0,
    timeout_s: float = 600.0,
    progress: bool = True,
) -> ConcurrencyStats:
    """``clients`` threads each submit single images to a :class:`DynamicBatcher` over ``backend``."""
    from msmlp.runtime.batcher import BatchCounter, DynamicBatcher

    pool = make_batch(backend, min(requests, 64), seed=1)
    counter = BatchCounter()
    batcher = DynamicBatcher(backend, max_batch, max_delay_ms, max(256, clients * 2), observers=[counter])

    def call(_client: int, seq: int) -> None:
        batcher.submit(pool[seq % len(pool)]).result(timeout_s)

    with batcher:
        latencies, errors, wall, sent = _closed_loop(clients, requests, call, timeout_s, progress, "batcher")
    info = {
        "max_batch": max_batch,
        "max_delay_ms": max_delay_ms,
        "mean_batch": counter.mean_batch,
        "batches": counter.batches,
        "batch_sizes": dict(sorted(counter.sizes.items())),
    }
    return _concurrency("batcher", clients, sent, latencies, errors, wall, info)


def load_service(
    url: str, clients: int, requests: int, *, timeout_s: float = 600.0, progress: bool = True
) -> ConcurrencyStats:
    """``clients`` threads each POST the built-in sample photos to ``<url>/v1/classify``."""
    import httpx

    from msmlp.data.transforms import builtin_images

    endpoint = url.rstrip("/")
    if not endpoint.endswith("/v1/classify"):
        endpoint += "/v1/classify"
    check_service(url)
    images = [(p.name, p.read_bytes()) for p in builtin_images()]
    # One connection pool per client, made before timing: creating an httpx.Client costs tens of ms.
    sessions = [httpx.Client(timeout=timeout_s) for _ in range(clients)]

    class HTTPStatusError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"HTTP {status}")
            self.kind = f"HTTP {status}"

    def call(client: int, seq: int) -> None:
        name, data = images[seq % len(images)]
        response = sessions[client].post(endpoint, files={"file": (name, data, "image/jpeg")})
        if response.status_code != 200:
            raise HTTPStatusError(response.status_code)

    try:
        latencies, errors, wall, sent = _closed_loop(clients, requests, call, timeout_s, progress, "http")
    finally:
        for session in sessions:
            session.close()
    return _concurrency(endpoint, clients, sent, latencies, errors, wall, {})


def _concurrency(
    target: str,
    clients: int,
    sent: int,
    latencies: list[float],
    errors: dict[str, int],
    wall: float,
    info: dict[str, Any],
) -> ConcurrencyStats:
    stats = summarize(latencies, 1) if latencies else None
    throughput = len(latencies) / wall if wall else 0.0
    samples = [t * 1e3 for t in latencies]
    return ConcurrencyStats(
        target, clients, sent, len(latencies), errors, wall, stats, throughput, info, samples
    )


def check_service(url: str) -> None:
    """Fail fast, in one line, when nothing answers at ``url`` (instead of timing a stream of errors)."""
    import httpx

    if not url.startswith(("http://", "https://")):
        raise InputError(f"--url {url!r} is not an http(s) URL; e.g. http://127.0.0.1:8000")
    base = url.rstrip("/").removesuffix("/v1/classify")
    try:
        httpx.get(base + "/healthz", timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ServiceError(
            f"--url {url}: no service answers ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no reply'}); "
            "start one with `msmlp serve` or check the address"
        ) from exc
