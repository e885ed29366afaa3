"""HTTP inference service: FastAPI in front of one :class:`~msmlp.runtime.batcher.DynamicBatcher`.

Endpoints:

- ``POST /v1/classify[?topk=5]``: an image as a multipart upload (field ``file``) or as the raw body
  with an ``image/*`` (or ``application/octet-stream``) content type. Returns
  ``{"model", "predictions": [{"index", "label", "probability"}, ...]}``.
- ``POST /v1/infer``: a preprocessed float32 tensor, C,H,W or N,C,H,W (N <= max_batch), either as raw
  little-endian bytes (``Content-Type: application/octet-stream`` and ``X-Shape: 1,3,224,224``) or as
  JSON ``{"shape": [...], "data": [...]}`` (flat or nested). Returns ``{"shape", "logits"}``.
- ``GET /healthz`` (process alive), ``GET /readyz`` (backend loaded and batch worker running, else 503),
  ``GET /metrics`` (Prometheus text format), ``GET /v1/model`` (what is being served).

Errors are JSON ``{"error": message, "type": class}``: 400 bad input (unreadable image, wrong shape),
413 body over ``max_body_bytes``, 415 unsupported content type, 503 with ``Retry-After`` when the queue
is full or the service is shutting down, 500 when the backend fails (only the requests in that batch).
Image decoding and resizing run in a thread pool so the event loop keeps accepting requests; the
backend runs in the batcher's own worker thread. Shutdown (SIGINT/SIGTERM) stops accepting, lets
in-flight requests finish and drains the queue.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from msmlp.data.labels import topk
from msmlp.data.transforms import load_image, transform
from msmlp.errors import InputError, MsmlpError, OverloadedError
from msmlp.log import logger
from msmlp.models.registry import DeployConfig
from msmlp.runtime.base import Backend
from msmlp.runtime.batcher import BatcherClosedError, BatchStats, DynamicBatcher

ENDPOINTS = ("/v1/classify", "/v1/infer", "/v1/model", "/healthz", "/readyz", "/metrics")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class PayloadTooLargeError(InputError):
    """The request body is over the service's size limit (HTTP 413)."""


class UnsupportedMediaTypeError(InputError):
    """The request's content type is not one the endpoint reads (HTTP 415)."""


def status_for(exc: BaseException) -> int:
    """The HTTP status for an error raised while serving a request."""
    if isinstance(exc, PayloadTooLargeError):
        return 413
    if isinstance(exc, UnsupportedMediaTypeError):
        return 415
    if isinstance(exc, OverloadedError):
        return 503
    if isinstance(exc, InputError):
        return 400
    return 500


class ServiceMetrics:
    """Prometheus metrics in a registry of their own (one per app, so apps and tests do not collide)."""

    def __init__(self, batcher: DynamicBatcher) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.infer_ewma_s = (
            stats.infer_s if not self.infer_ewma_s else 0.8 * self.infer_ewma_s + 0.2 * stats.infer_s
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Guard:
    """Outermost ASGI layer: the body size limit (413), and request counts/latency by endpoint."""

    def __init__(self, app: Any, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.limit = app, metrics, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status, start, received = 500, time.perf_counter(), 0

        async def send_counted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receive_limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large(f"more than {received}")
            return message

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                exc = self._too_large(declared.decode())
                await _error_response(exc, 413)(scope, receive, send_counted)
                return
            await self.app(scope, receive_limited, send_counted)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def _too_large(self, size: str) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body of {size} bytes is over the limit of {self.limit} bytes; "
            "send a smaller image or start the service with a larger --max-body-mb"
        )


def _error_response(exc: BaseException, status: int, retry_after_s: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after_s)} if status == 503 and retry_after_s else None
    return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=status, headers=headers)


class _Service:
    """The app's state: the batcher, metrics, and the preprocessing config (known once loaded)."""

    def __init__(
        self,
        backend: Backend,
        config: DeployConfig | None,
        batcher: DynamicBatcher,
        *,
        default_topk: int,
        max_body_bytes: int,
        model_name: str | None,
    ) -> None:
        self.backend, self.config, self.batcher = backend, config, batcher
        self.metrics = ServiceMetrics(batcher)
        batcher.add_observer(self.metrics.observe_batch)
        self.default_topk = default_topk
        self.max_body_bytes = max_body_bytes
        self.model_name = model_name or "model"
        self.start_error: BaseException | None = None

    def startup(self) -> None:
        """Start the worker (it loads the backend), then settle the preprocessing config. Idempotent:
        ``serve`` calls it before uvicorn starts, so a load error is one clear message, not a traceback."""
        if self.batcher.running:
            return
        try:
            self.batcher.start()
            self.config = self._settle_config()
            self._warm_up()
        except BaseException as exc:
            self.start_error = exc
            self.batcher.close(drain=False)
            raise

    def _warm_up(self) -> None:
        """One image through the whole path before reporting ready: the first JPEG decode, resize and
        backend call of a process pay one-off costs (plugin imports, allocations) of 100s of ms."""
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (96, 80), (120, 90, 60)).save(buffer, format="JPEG")
        x = _image_array(buffer.getvalue(), "warm-up image", self.config)
        topk(self.batcher.submit(x).result(timeout=600)[None], self.default_topk)

    def _settle_config(self) -> DeployConfig:
        shape = tuple(self.backend.input_shape[1:])
        config = self.config or getattr(self.backend, "config", None)
        if config is None:
            logger.warning("no deployment config: /v1/classify assumes ImageNet mean/std and bicubic resize")
            config = DeployConfig(input_size=shape)  # type: ignore[arg-type]
        if tuple(config.input_size) != shape:
            raise InputError(
                f"config input size {config.input_size} does not match the model's input {shape}"
            )
        return config

    def retry_after_s(self) -> int:
        """A rough time until the queue has room: queued batches times the recent batch time."""
        batches = self.batcher.queue_depth / self.batcher.max_batch
        return max(1, math.ceil(batches * self.metrics.infer_ewma_s))

    def ready(self) -> tuple[bool, str]:
        if not self.backend.loaded:
            return False, "backend not loaded"
        if not self.batcher.running:
            return False, "batch worker not running"
        return True, "ready"


def create_app(
    backend: Backend,
    config: DeployConfig | None = None,
    *,
    max_batch: int = 8,
    max_delay_ms: float = 2.0,
    max_queue: int = 256,
    max_body_bytes: int = 8 << 20,
    default_topk: int = 5,
    drain_timeout_s: float = 30.0,
    model_name: str | None = None,
) -> FastAPI:
    """The FastAPI app serving ``backend`` (loaded at startup, in the batcher's worker thread).

    ``config`` gives preprocessing (size, mean/std, resize); ``None`` takes the backend's own config.
    """
    if max_body_bytes < 1:
        raise InputError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    if default_topk < 1:
        raise InputError(f"default top-k must be >= 1, got {default_topk}")
    batcher = DynamicBatcher(backend, max_batch, max_delay_ms, max_queue, name="msmlp-serve-batcher")
    service = _Service(
        backend,
        config,
        batcher,
        default_topk=default_topk,
        max_body_bytes=max_body_bytes,
        model_name=model_name,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await run_in_threadpool(service.startup)
        logger.info("serving %s (%s) with max_batch %d", service.model_name, backend.name, max_batch)
        yield
        await run_in_threadpool(batcher.close, True, drain_timeout_s)
        logger.info("batcher drained; service stopped")

    from msmlp import __version__

    app = FastAPI(title="msmlp inference service", version=__version__, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(_Guard, metrics=service.metrics, max_body_bytes=max_body_bytes)
    _add_error_handlers(app, service)
    _add_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI, service: _Service) -> None:
    @app.exception_handler(MsmlpError)
    async def msmlp_error(request: Request, exc: MsmlpError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500 and not isinstance(exc, OverloadedError):
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error_response(exc, status, service.retry_after_s())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "type": "HTTPException"}, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {exc}", "type": "InternalError"}, 500
        )


def _add_routes(app: FastAPI, service: _Service) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, reason = service.ready()
        return JSONResponse({"status": "ready" if ok else "not ready", "reason": reason}, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        b = service.batcher
        return {
            "model": service.model_name,
            "backend": service.backend.describe(),
            "config": service.config.to_dict() if service.config else None,
            "batcher": {"max_batch": b.max_batch, "max_delay_ms": b.max_delay_ms, "max_queue": b.max_queue},
            "max_body_bytes": service.max_body_bytes,
        }

    @app.post("/v1/classify")
    async def classify(request: Request) -> JSONResponse:
        k = _topk_param(request, service)
        data, label = await _image_bytes(request)
        x = await run_in_threadpool(_image_array, data, label, service.config)
        logits = await service.batcher.infer_async(x)
        predictions = [p.to_dict() for p in topk(logits[None], k)[0]]
        return JSONResponse({"model": service.model_name, "predictions": predictions})

    @app.post("/v1/infer")
    async def infer(request: Request) -> JSONResponse:
        x = await _tensor(request)
        logits = await service.batcher.infer_async(x)
        return JSONResponse({"shape": list(logits.shape), "logits": logits.tolist()})


def _topk_param(request: Request, service: _Service) -> int:
    raw = request.query_params.get("topk")
    if raw is None:
        return service.default_topk
    classes = service.config.num_classes if service.config else 1000
    if not raw.isdigit() or not 1 <= int(raw) <= classes:
        raise InputError(f"topk={raw!r} is not an integer within 1..{classes}")
    return int(raw)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _image_bytes(request: Request) -> tuple[bytes, str]:
    ctype = _content_type(request)
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InputError(
                    f"multipart body has no file part named 'file' (parts: {sorted(form.keys())}); "
                    "send it as: curl -F file=@photo.jpg URL"
                )
            data, label = await upload.read(), upload.filename or "upload"
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data, label = await request.body(), "request body"
    else:
        raise UnsupportedMediaTypeError(
            f"content type {ctype or 'none'!r} is not accepted by /v1/classify; send multipart/form-data "
            "with a 'file' part, or the image bytes with an image/* content type"
        )
    if not data:
        raise InputError(f"the image ({label}) is empty")
    return data, label


def _image_array(data: bytes, label: str, config: DeployConfig | None) -> np.ndarray:
    assert config is not None, "service not started"
    return transform(load_image(data, name=label), config)


async def _tensor(request: Request) -> np.ndarray:
    ctype = _content_type(request)
    if ctype == "application/octet-stream":
        shape = _shape_header(request.headers.get("x-shape"))
        body = await request.body()
        expected = math.prod(shape) * 4
        if len(body) != expected:
            raise InputError(f"body has {len(body)} bytes; shape {list(shape)} of float32 needs {expected}")
        return np.frombuffer(body, dtype="<f4").reshape(shape).astype(np.float32)  # own, writable copy
    if ctype == "application/json":
        return await run_in_threadpool(_json_tensor, await request.body())
    raise UnsupportedMediaTypeError(
        f"content type {ctype or 'none'!r} is not accepted by /v1/infer; send application/octet-stream "
        '(float32 bytes, header X-Shape: N,C,H,W) or application/json {"shape": [...], "data": [...]}'
    )


def _shape_header(raw: str | None) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in (raw or "").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise InputError(f"header X-Shape {raw!r} must be positive integers like 1,3,224,224")
    return shape


def _json_tensor(body: bytes) -> np.ndarray:
    try:
        payload = json.loads(body)
        data = np.asarray(payload["data"], dtype=np.float32)
        shape = tuple(int(d) for d in payload.get("shape", data.shape))
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(
            f'JSON body must be {{"shape": [N, C, H, W], "data": [numbers]}} ({type(exc).__name__}: {exc})'
        ) from None
    if data.size != math.prod(shape):
        raise InputError(f"data has {data.size} numbers but shape {list(shape)} needs {math.prod(shape)}")
    return data.reshape(shape)


# -- running it ----------------------------------------------------------------------------------------
def serve(
    backend: Backend,
    config: DeployConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    access_log: bool = False,
    drain_timeout_s: float = 30.0,
    on_ready: Callable[[], None] | None = None,
    **app_options: Any,
) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM, then drain and stop. The backend is loaded
    first, so a bad model fails here with one clear error; ``on_ready`` is called after that."""
    import uvicorn

    app = create_app(backend, config, drain_timeout_s=drain_timeout_s, **app_options)
    service: _Service = app.state.service
    service.startup()
    if on_ready is not None:
        on_ready()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=max(1, math.ceil(drain_timeout_s)),
        )
    finally:
        service.batcher.close(drain=True, timeout_s=drain_timeout_s)  # no-op after a normal shutdown


class ServiceThread:
    """The app under uvicorn in a background thread, for tests, benchmarks and embedding.

    ``start()`` returns the base URL once the server listens (``port=0`` picks a free port);
    ``stop()`` is uvicorn's graceful shutdown: stop accepting, finish in-flight requests, drain.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="msmlp-uvicorn", daemon=True)
        self.url = ""

    def start(self, timeout_s: float = 120.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                error = getattr(self.app.state.service, "start_error", None)
                if isinstance(error, MsmlpError):
                    raise error
                raise BatcherClosedError(f"the service failed to start ({error or 'see the log'})")
            if time.monotonic() > deadline:
                self.server.should_exit = True
                raise BatcherClosedError(f"the service did not start within {timeout_s} s")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def request_stop(self) -> None:
        """Begin the graceful shutdown without waiting for it."""
        self.server.should_exit = True

    def stop(self, timeout_s: float | None = 120.0) -> bool:
        """Shut down gracefully; False if the thread is still running after ``timeout_s``."""
        self.request_stop()
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def __enter__(self) -> ServiceThread:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
