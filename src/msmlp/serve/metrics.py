"""Prometheus metrics and per-model statistics, kept outside the batcher's loop (it calls observers).

:class:`RequestMetrics` is the outermost ASGI layer: it counts requests by the route that matched and
their status, and times them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import BaseRoute, Match

from msmlp.runtime.batcher import BatchStats, DynamicBatcher

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNMATCHED = "other"  # the label of requests no route matched, so clients cannot grow the metric set


def endpoint_label(scope: dict, routes: Sequence[BaseRoute]) -> str:
    """The path template of the route that matched (``/v2/models/{name}/infer``), never the raw path.

    The router leaves the route it chose in the scope; a request refused before routing (an oversized
    body) is matched here the router's way, so its 413 is counted under its route too.
    """
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    return getattr(route, "path", UNMATCHED)


class ServiceMetrics:
    """Prometheus metrics in a registry of their own (one per app, so apps and tests do not collide)."""

    def __init__(self, batcher: DynamicBatcher) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "msmlp_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "msmlp_request_seconds",
            "Request time in the server",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "msmlp_batch_size", "Images per backend call", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_time = Histogram(
            "msmlp_queue_seconds",
            "Time a request waited for its batch",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.infer_time = Histogram(
            "msmlp_inference_seconds", "Backend call time per batch", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.batch_errors = Counter("msmlp_batch_errors", "Backend calls that raised", registry=r)
        self.queue_depth = Gauge("msmlp_queue_depth", "Images waiting in the batch queue", registry=r)
        self.queue_depth.set_function(lambda: batcher.queue_depth)
        self.infer_ewma_s = 0.0

    def observe_batch(self, stats: BatchStats) -> None:
        """Batcher observer: runs in the worker thread once per backend call."""
        self.batch_size.observe(stats.size)
        self.infer_time.observe(stats.infer_s)
        for q in stats.queue_s:
            self.queue_time.observe(q)
        if stats.error is not None:
            self.batch_errors.inc()
        ewma = self.infer_ewma_s
        self.infer_ewma_s = stats.infer_s if not ewma else 0.8 * ewma + 0.2 * stats.infer_s

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelStats:
    """Triton's per-model statistics (``/v2/models/{name}/stats``), from batches and v2 requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success = [0, 0]  # count, ns (request time in the server)
        self.fail = [0, 0]
        self.queue = [0, 0]
        self.compute = [0, 0]
        self.inference_count = 0  # images
        self.execution_count = 0  # backend calls
        self.last_inference_ms = 0
        self.batches: dict[int, list[int]] = {}  # batch size -> [count, ns]

    def observe_batch(self, stats: BatchStats) -> None:
        ns = int(stats.infer_s * 1e9)
        with self._lock:
            self.execution_count += 1
            self.queue[0] += len(stats.queue_s)
            self.queue[1] += int(sum(stats.queue_s) * 1e9)
            if stats.error is None:
                self.inference_count += stats.size
                self.compute[0] += 1
                self.compute[1] += ns
                entry = self.batches.setdefault(stats.size, [0, 0])
                entry[0] += 1
                entry[1] += ns
            self.last_inference_ms = int(time.time() * 1000)

    def observe_request(self, ok: bool, seconds: float) -> None:
        with self._lock:
            target = self.success if ok else self.fail
            target[0] += 1
            target[1] += int(seconds * 1e9)

    def to_dict(self, name: str, version: str) -> dict[str, Any]:
        def pair(v: list[int]) -> dict[str, int]:
            return {"count": v[0], "ns": v[1]}

        with self._lock:
            return {
                "name": name,
                "version": version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": pair(self.success),
                    "fail": pair(self.fail),
                    "queue": pair(self.queue),
                    "compute_infer": pair(self.compute),
                },
                "batch_stats": [
                    {"batch_size": size, "compute_infer": pair(v)} for size, v in sorted(self.batches.items())
                ],
            }


class RequestMetrics:
    """ASGI middleware: requests by matched route and status, and their time in the server."""

    def __init__(self, app: Any, metrics: ServiceMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, start = 500, time.perf_counter()

        async def send_counted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            endpoint = endpoint_label(scope, self.routes)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
