"""The service's one error boundary: what a failed request answers, and what reaches the log.

Expected failures are :class:`~msmlp.errors.MsmlpError` subclasses and answer their status with a
one-line JSON message. Anything else is a bug in msmlp: its traceback goes to the server log under a
short reference, and the client gets a 500 that says so and quotes the reference, never the traceback.
Paths of the KServe v2 protocol (``/v2/...``) answer the protocol's ``{"error": message}``; the others
add ``"type"`` (the error class) for scripts. The handlers take what a route raises; :class:`ErrorBoundary`
(a middleware) takes whatever got past them.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from msmlp.errors import InputError, MsmlpError, OverloadedError, ServiceError
from msmlp.log import logger


class PayloadTooLargeError(InputError):
    """The request body (or the image it holds) is over the service's limit (HTTP 413)."""


class UnsupportedMediaTypeError(InputError):
    """The request's content type is not one the endpoint reads (HTTP 415)."""


class NotFoundError(InputError):
    """No such model or version on this server (HTTP 404)."""


class PortInUseError(ServiceError):
    """The address to serve on is taken by another process (exit code 6, as every service error)."""


class NotReadyError(OverloadedError):
    """The service is starting or stopping: try again shortly (HTTP 503)."""


def status_for(exc: BaseException) -> int:
    """The HTTP status for an error raised while serving a request."""
    for cls, status in (
        (PayloadTooLargeError, 413),
        (UnsupportedMediaTypeError, 415),
        (NotFoundError, 404),
        (OverloadedError, 503),
        (InputError, 400),
    ):
        if isinstance(exc, cls):
            return status
    return 500


def one_line(text: str, limit: int = 500) -> str:
    """Messages are one line and bounded, whatever the error text holds (a pydantic error lists inputs)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_response(
    path: str, message: str, status: int, error_type: str, retry_after_s: int | None = None
) -> JSONResponse:
    body = {"error": one_line(message)}
    if not path.startswith("/v2"):
        body["type"] = error_type
    headers = {"Retry-After": str(retry_after_s)} if status == 503 and retry_after_s else None
    return JSONResponse(body, status_code=status, headers=headers)


def internal_error(path: str, method: str, exc: BaseException) -> JSONResponse:
    """Log the traceback under a reference; answer 500 without it."""
    ref = uuid.uuid4().hex[:12]
    logger.error("%s %s failed (ref %s): a bug in msmlp", method, path, ref, exc_info=exc)
    message = (
        f"internal error (a bug in msmlp): {type(exc).__name__}; see the server log (ref {ref}) "
        "and please report it"
    )
    return error_response(path, message, 500, "InternalError")


def _validation_message(exc: RequestValidationError) -> str:
    """Pydantic's errors as one readable line: "query parameter topk='²': Input should be ..."."""
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(p) for p in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])}" if len(loc) > 1 else ".".join(loc) or "request"
        got = err.get("input")
        if isinstance(got, (str, int, float)) and len(repr(got)) < 60:
            where += f"={got!r}"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, retry_after_s: Callable[[], int]) -> None:
    """Register the boundary on ``app``; ``retry_after_s`` estimates when a full queue has room."""

    @app.exception_handler(MsmlpError)
    async def msmlp_error(request: Request, exc: MsmlpError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500 and not isinstance(exc, OverloadedError):
            logger.error("%s %s failed: %s", request.method, request.url.path, one_line(str(exc)))
        retry = retry_after_s() if status == 503 else None
        return error_response(request.url.path, str(exc), status, type(exc).__name__, retry)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.url.path, _validation_message(exc), 400, "InputError")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            detail = f"no endpoint {request.url.path!r}; see /docs for the API"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path!r}; see /docs"
        response = error_response(request.url.path, detail, exc.status_code, "HTTPException")
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # Raised while parsing a deeply nested body anywhere (a parser we did not wrap): bad input.
        return error_response(request.url.path, "request body is nested too deeply", 400, "InputError")

    # Anything else is caught by ErrorBoundary, which calls internal_error: Starlette's own handler
    # for Exception would re-raise and log it twice.


class ErrorBoundary:
    """ASGI middleware, the last resort. An :class:`MsmlpError` raised outside any route (the body limit)
    is answered as the handlers would; any other exception no handler took is a bug, logged with its
    traceback under a reference and answered with a JSON 500 (only logged, once the response began)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, path, method = False, scope["path"], scope.get("method", "?")

        async def send_tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except MsmlpError as exc:
            response = error_response(path, str(exc), status_for(exc), type(exc).__name__)
            if started:
                logger.warning("%s %s failed after its response began: %s", method, path, one_line(str(exc)))
                return
            await response(scope, receive, send)
        except Exception as exc:  # no handler took it: a bug, logged with its traceback by internal_error
            response = internal_error(path, method, exc)
            if not started:  # once the response began, it is too late to answer; the log has it
                await response(scope, receive, send)


def retry_after(queue_depth: int, max_batch: int, batch_s: float) -> int:
    """A rough time until a full queue has room: queued batches times the recent batch time."""
    return max(1, math.ceil(queue_depth / max(1, max_batch) * batch_s))
