"""What one request may hold, declared once, and the body-size limit that enforces the first of them.

The request models (:mod:`msmlp.serve.schemas`) take the tensor limits from here, so the OpenAPI schema
and the parser cannot disagree; :func:`msmlp.serve.create_app` and
:func:`msmlp.serve.triton_server.serve_triton` take their defaults from here.
:class:`BodyLimit` refuses a declared Content-Length over the limit before anything else looks at the
request, and counts a chunked body while a route reads it; both raise :class:`PayloadTooLargeError`,
which the error boundary answers with 413.
"""

from __future__ import annotations

from typing import Any

from msmlp.serve.errors import PayloadTooLargeError

MAX_BATCH = 8  # images per backend call, unless the exported file's batch profile stops below it
MAX_DELAY_MS = 2.0  # how long a batch waits for more requests
MAX_QUEUE = 256  # images (Triton: requests) waiting for a batch; beyond it, 503
MAX_BODY_BYTES = 8 << 20
MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB of RGB; resize larger ones first
MAX_RANK = 8
MAX_DIM = 2**31 - 1
MULTIPART_MAX_FILES = 1
MULTIPART_MAX_FIELDS = 16


class BodyLimit:
    """ASGI middleware: a request body over ``max_body_bytes`` raises :class:`PayloadTooLargeError`."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            raise self.too_large(declared.decode())  # before routing: no route reads a byte of it
        received = 0

        async def receive_limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self.too_large(f"more than {self.limit}")
            return message

        await self.app(scope, receive_limited, send)

    def too_large(self, size: str) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body of {size} bytes is over the limit of {self.limit} bytes; "
            "send a smaller request or start the service with a larger --max-body-mb"
        )
