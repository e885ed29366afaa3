"""The FastAPI app: one :class:`~msmlp.runtime.batcher.DynamicBatcher` behind two protocols.

``/v1`` is msmlp's own (``POST /v1/classify`` an image, ``POST /v1/infer`` a float32 tensor,
``GET /v1/model``, ``/healthz``, ``/readyz``, ``/metrics``); ``/v2`` is the KServe v2 / Triton HTTP
protocol (see :mod:`msmlp.serve.v2`), so Triton's clients work unchanged. Both feed the same batcher.
JSON bodies are parsed by the models of :mod:`msmlp.serve.schemas`, which are also the ``/openapi.json``
schema; values are decoded by :mod:`msmlp.serve.codecs` (strict) in a thread pool, so the event loop
keeps accepting requests while images are decoded. Three middlewares, outermost first: request metrics,
the last-resort error boundary, the body-size limit; errors go through :mod:`msmlp.serve.errors`.
"""

from __future__ import annotations

import io
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from msmlp.data.labels import class_names, topk
from msmlp.errors import InputError
from msmlp.log import logger
from msmlp.models.config import DeployConfig
from msmlp.runtime.base import Backend
from msmlp.runtime.batcher import DynamicBatcher
from msmlp.serve import codecs, schemas
from msmlp.serve.errors import ErrorBoundary, UnsupportedMediaTypeError, install_error_handlers, retry_after
from msmlp.serve.limits import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_DELAY_MS,
    MAX_IMAGE_PIXELS,
    MAX_QUEUE,
    MULTIPART_MAX_FIELDS,
    MULTIPART_MAX_FILES,
    BodyLimit,
)
from msmlp.serve.metrics import ModelStats, RequestMetrics, ServiceMetrics
from msmlp.serve.schemas import BINARY, ClassifyResponse, ErrorResponse, InferResponse, TensorRequest

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "bad input"),
        (413, "body or image too large"),
        (415, "unsupported content type"),
        (503, "queue full or not ready (Retry-After)"),
    )
}
_UPLOAD = {
    "schema": {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary"}},
        "required": ["file"],
    }
}


class Service:
    """The app's state: batcher, metrics, and the preprocessing config (settled once the backend loads)."""

    def __init__(
        self,
        backend: Backend,
        config: DeployConfig | None,
        batcher: DynamicBatcher,
        *,
        default_topk: int,
        max_body_bytes: int,
        max_image_pixels: int,
        model_name: str | None,
    ) -> None:
        self.backend, self.config, self.batcher = backend, config, batcher
        self.metrics = ServiceMetrics(batcher)
        self.stats = ModelStats()
        batcher.add_observer(self.metrics.observe_batch)
        batcher.add_observer(self.stats.observe_batch)
        self.default_topk = default_topk
        self.max_body_bytes = max_body_bytes
        self.max_image_pixels = max_image_pixels
        self.model_name = model_name or "model"
        self._given_name = model_name
        self.start_error: BaseException | None = None
        self.features: Any = None  # a feature graph's FeatureLayout (v2 returns every output)

    def startup(self) -> None:
        """Start the worker (it loads the backend), settle config and name, warm up. Idempotent:
        ``serve`` calls it before uvicorn starts, so a load error is one clear message, not a traceback."""
        if self.batcher.running:
            return
        try:
            self.batcher.start()
            info = self.backend.info
            self.model_name = self._given_name or info.model or "model"
            self.features = info.features
            self.config = self._settle_config(info.config)
            self._warm_up()
        except BaseException as exc:
            self.start_error = exc
            self.batcher.close(drain=False)
            raise

    def _settle_config(self, backend_config: DeployConfig | None) -> DeployConfig:
        shape = tuple(self.backend.input_shape[1:])
        config = self.config or backend_config
        if config is None:
            logger.warning("no deployment config: /v1/classify assumes ImageNet mean/std and bicubic resize")
            config = DeployConfig(input_size=shape)  # type: ignore[arg-type]
        if self.features is None and tuple(config.input_size) != shape:
            raise InputError(
                f"config input size {config.input_size} does not match the model's input {shape}"
            )
        return config

    def _warm_up(self) -> None:
        """One image through the whole path before reporting ready: the first decode, resize and backend
        call of a process pay one-off costs (imports, allocations) of 100s of ms."""
        from PIL import Image

        if self.features is not None:  # one input at the size runtimes tune for
            h, w = self.features.opt_size
            self.batcher.submit(np.zeros((self.backend.input_shape[1], h, w), np.float32)).result(timeout=600)
            return
        buffer = io.BytesIO()
        Image.new("RGB", (96, 80), (120, 90, 60)).save(buffer, format="JPEG")
        x = self.decode_image(buffer.getvalue(), "warm-up image")
        topk(self.batcher.submit(x).result(timeout=600)[None], self.default_topk, self.config.labels)

    def decode_image(self, data: bytes, label: str) -> np.ndarray:
        assert self.config is not None, "service not started"
        if self.features is not None:
            raise InputError(
                f"{self.model_name} is a feature export (outputs {', '.join(self.features.names)}): it does not "
                f"classify; send tensors to /v2/models/{self.model_name}/infer"
            )
        return codecs.decode_image(data, label, self.config, self.max_image_pixels)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes if self.config else 1000

    @property
    def class_labels(self) -> tuple[str, ...] | None:
        """The names v2 classification appends (``value:index:label``, as Triton's label file does): the
        model's own labels, ImageNet's for 1000 classes, else None (``value:index`` only)."""
        labels = self.config.labels if self.config else ()
        if labels or self.num_classes == 1000:
            return class_names(self.num_classes, labels)
        return None

    def retry_after_s(self) -> int:
        return retry_after(self.batcher.queue_depth, self.batcher.max_batch, self.metrics.infer_ewma_s)

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
    max_batch: int = MAX_BATCH,
    max_delay_ms: float = MAX_DELAY_MS,
    max_queue: int = MAX_QUEUE,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    default_topk: int = 5,
    drain_timeout_s: float = 30.0,
    model_name: str | None = None,
) -> FastAPI:
    """The FastAPI app serving ``backend`` (loaded at startup, in the batcher's worker thread).

    ``config`` gives preprocessing (size, mean/std, resize); ``None`` takes the backend's own config.
    """
    from msmlp import __version__
    from msmlp.serve.v2 import add_v2_routes

    for value, what in (
        (max_body_bytes, "max_body_bytes"),
        (default_topk, "default top-k"),
        (max_image_pixels, "max_image_pixels"),
    ):
        if value < 1:
            raise InputError(f"{what} must be >= 1, got {value}")
    batcher = DynamicBatcher(backend, max_batch, max_delay_ms, max_queue, name="msmlp-serve-batcher")
    service = Service(
        backend,
        config,
        batcher,
        default_topk=default_topk,
        max_body_bytes=max_body_bytes,
        max_image_pixels=max_image_pixels,
        model_name=model_name,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await run_in_threadpool(service.startup)
        logger.debug("serving %s (%s) with max_batch %d", service.model_name, backend.name, max_batch)
        yield
        await run_in_threadpool(batcher.close, True, drain_timeout_s)
        logger.info("batcher drained; service stopped")

    app = FastAPI(
        title="msmlp inference service",
        version=__version__,
        lifespan=lifespan,
        description="Image classification with dynamic batching: msmlp's /v1 API and the KServe v2 "
        "(Triton) HTTP protocol under /v2.",
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)  # innermost of the three
    app.add_middleware(ErrorBoundary)
    app.add_middleware(
        RequestMetrics, metrics=service.metrics, routes=app.router.routes
    )  # outermost: counts the 500s too
    install_error_handlers(app, service.retry_after_s)
    _add_v1_routes(app, service)
    add_v2_routes(app, service)
    return app


def _add_v1_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", tags=["health"], summary="process alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz", tags=["health"], summary="backend loaded and batch worker running", responses={503: {}}
    )
    async def readyz() -> JSONResponse:
        ok, reason = service.ready()
        return JSONResponse({"status": "ready" if ok else "not ready", "reason": reason}, 200 if ok else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model", tags=["v1"], summary="what is being served")
    async def model() -> dict[str, Any]:
        b = service.batcher
        return {
            "model": service.model_name,
            "backend": service.backend.describe() if service.backend.loaded else None,
            "config": service.config.to_dict() if service.config else None,
            "batcher": {"max_batch": b.max_batch, "max_delay_ms": b.max_delay_ms, "max_queue": b.max_queue},
            "max_body_bytes": service.max_body_bytes,
            "max_image_pixels": service.max_image_pixels,
        }

    def post(path: str, summary: str, response: type[BaseModel], body: dict[str, Any]) -> Any:
        """A /v1 body route: its request body by media type (see schemas.request_body)."""
        return app.post(
            path,
            tags=["v1"],
            summary=summary,
            response_model=response,
            responses=ERRORS,
            openapi_extra=schemas.request_body(body),
        )

    @post(
        "/v1/classify",
        "top-k labels for an image (multipart field 'file', or the raw image bytes)",
        ClassifyResponse,
        {
            "multipart/form-data": _UPLOAD,
            "image/jpeg": BINARY,
            "image/png": BINARY,
            "application/octet-stream": BINARY,
        },
    )
    async def classify(
        request: Request,
        k: Annotated[
            int | None, Query(alias="topk", ge=1, description="labels to return (default: --topk)")
        ] = None,
    ) -> JSONResponse:
        if k is not None and k > service.num_classes:
            raise InputError(f"topk={k} is not within 1..{service.num_classes}")
        data, label = await _image_bytes(request)
        x = await run_in_threadpool(service.decode_image, data, label)
        logits = await service.batcher.infer_async(x)
        labels = service.config.labels if service.config else ()
        predictions = [p.to_dict() for p in topk(logits[None], k or service.default_topk, labels)[0]]
        return JSONResponse({"model": service.model_name, "predictions": predictions})

    @post(
        "/v1/infer",
        "logits for a preprocessed float32 tensor (C,H,W or N,C,H,W)",
        InferResponse,
        {"application/json": TensorRequest, "application/octet-stream": BINARY},
    )
    async def infer(
        request: Request,
        x_shape: Annotated[
            str | None, Header(alias="X-Shape", description="shape of a raw body, e.g. 1,3,224,224")
        ] = None,
    ) -> JSONResponse:
        ctype = codecs.content_type(request.headers)
        if ctype == "application/octet-stream":
            shape = schemas.parse_shape_header(x_shape)
            x = await run_in_threadpool(codecs.tensor_from_bytes, await request.body(), shape, "request body")
        elif ctype == "application/json":
            x = await run_in_threadpool(_json_tensor, await request.body())
        else:
            raise UnsupportedMediaTypeError(
                f"content type {ctype or 'none'!r} is not accepted by /v1/infer; send application/octet-stream "
                '(float32 bytes, header X-Shape: N,C,H,W) or application/json {"shape": [...], "data": [...]}'
            )
        if service.features is not None:
            raise InputError(
                f"/v1/infer returns logits; {service.model_name} is a feature export: post to "
                f"/v2/models/{service.model_name}/infer for its outputs {', '.join(service.features.names)}"
            )
        logits = await service.batcher.infer_async(x)
        return JSONResponse({"shape": list(logits.shape), "logits": logits.tolist()})


async def _image_bytes(request: Request) -> tuple[bytes, str]:
    ctype = codecs.content_type(request.headers)
    if ctype == "multipart/form-data":
        async with request.form(max_files=MULTIPART_MAX_FILES, max_fields=MULTIPART_MAX_FIELDS) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InputError(
                    f"multipart body has no file part named 'file' (parts: {sorted(form.keys())[:8]}); "
                    "send it as: curl -F file=@photo.jpg URL"
                )
            return await upload.read(), (upload.filename or "upload")[:100]
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await request.body(), "request body"
    raise UnsupportedMediaTypeError(
        f"content type {ctype or 'none'!r} is not accepted by /v1/classify; send multipart/form-data "
        "with a 'file' part, or the image bytes with an image/* content type"
    )


def _json_tensor(body: bytes) -> np.ndarray:
    request = schemas.parse_body(TensorRequest, body, "JSON body")
    shape = tuple(request.shape) if request.shape is not None else None
    return codecs.tensor_from_json(request.data, shape, "JSON body")
