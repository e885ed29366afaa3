"""The body-size limit and the last-resort error boundary are two middlewares with one job each, driven
here directly as ASGI apps (real Starlette responses, the package's real logger)."""

from __future__ import annotations

import asyncio
import json

import pytest

from msmlp.serve.errors import ErrorBoundary, PayloadTooLargeError
from msmlp.serve.limits import BodyLimit

from .support import LogCapture


def http_scope(path: str = "/v1/infer", headers: dict[bytes, bytes] | None = None) -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": list((headers or {}).items())}


def call(app, scope: dict, chunks: list[bytes] = ()) -> list[dict]:
    """Run ``app`` on ``scope`` with a body in ``chunks``; the messages it sent."""
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def read_all(scope, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def answer(sent: list[dict]) -> tuple[int, dict]:
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_body_limit_refuses_a_declared_length_before_the_app_runs():
    ran = []

    async def app(scope, receive, send) -> None:
        ran.append(scope["path"])

    with pytest.raises(PayloadTooLargeError, match="request body of 11 bytes is over the limit of 10 bytes"):
        call(BodyLimit(app, max_body_bytes=10), http_scope(headers={b"content-length": b"11"}))
    assert not ran


def test_body_limit_counts_a_chunked_body_while_it_is_read():
    limited = BodyLimit(read_all, max_body_bytes=10)
    assert call(limited, http_scope(), [b"12345", b"12345"])[0]["status"] == 200
    with pytest.raises(PayloadTooLargeError, match="more than 10 bytes"):
        call(limited, http_scope(), [b"12345", b"12345", b"1"])


def test_error_boundary_answers_an_error_raised_outside_the_routes():
    boundary = ErrorBoundary(BodyLimit(read_all, max_body_bytes=10))
    status, body = answer(call(boundary, http_scope(headers={b"content-length": b"99"})))
    assert status == 413 and "limit of 10 bytes" in body["error"] and body["type"] == "PayloadTooLargeError"
    status, body = answer(call(boundary, http_scope("/v2/models/m/infer", {b"content-length": b"99"})))
    assert status == 413 and set(body) == {"error"}, "v2 paths answer the protocol's {error}"


def test_error_boundary_logs_a_bug_with_its_traceback_and_answers_500():
    async def buggy(scope, receive, send) -> None:
        raise ZeroDivisionError("division by zero")

    with LogCapture() as log:
        status, body = answer(call(ErrorBoundary(buggy), http_scope()))
    assert status == 500 and body["error"].startswith("internal error (a bug in msmlp): ZeroDivisionError")
    ref = body["error"].split("ref ")[1][:12]
    assert f"ref {ref}" in log.text and "Traceback" in log.text and "division by zero" in log.text


def test_error_boundary_only_logs_a_bug_after_the_response_began():
    async def late(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("late")

    with LogCapture() as log:
        sent = call(ErrorBoundary(late), http_scope())
    assert [m["type"] for m in sent] == ["http.response.start"], "no second response start"
    assert "KeyError" in log.text and "Traceback" in log.text
