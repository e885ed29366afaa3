"""Bad HTTP input never reaches a 500 or a traceback (issue 8): a table of malformed requests sent to
the real server on loopback, each answered with its status and a one-line JSON message, and nothing
logged with a traceback while it was handled."""

from __future__ import annotations

import json
import struct
import zlib

import httpx
import numpy as np
import pytest

from .support import LIMIT, MODEL, SHAPE, WAIT_S

V2 = f"/v2/models/{MODEL}/infer"
ONE = [1, *SHAPE]
N = int(np.prod(ONE))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a valid IHDR (and holds no pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def v2_json(shape=ONE, datatype="FP32", data=None, **extra) -> dict:
    tensor = {"name": "input", "shape": shape, "datatype": datatype, "data": data or [0.5] * N}
    return {"inputs": [tensor], **extra}


def raw(x: np.ndarray, shape: str) -> dict:
    headers = {"content-type": "application/octet-stream", "x-shape": shape.encode()}  # bytes: UTF-8 as sent
    return {"content": x.tobytes(), "headers": headers}


def text_json(text: str) -> dict:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


def binary_v2(header: dict, blob: bytes, declared: int | None = None) -> dict:
    head = json.dumps(header).encode()
    length = str(len(head) if declared is None else declared)
    return {"content": head + blob, "headers": {"Inference-Header-Content-Length": length}}


ZEROS = np.zeros(ONE, np.float32)
WITH_INF = ZEROS.copy()
WITH_INF[0, 1, 2, 3] = np.inf
NHWC = np.zeros((1, SHAPE[1], SHAPE[2], SHAPE[0])).tolist()
DEEP = "[" * 100_000 + "]" * 100_000
BINARY_HEADER = {
    "inputs": [{"name": "input", "shape": ONE, "datatype": "FP32", "parameters": {"binary_data_size": 4 * N}}]
}

CASES = [
    # (id, method, path, request kwargs, status, message fragment)
    ("nan-literal-json", "POST", "/v1/infer", text_json('{"shape": [1], "data": [NaN]}'), 400, "holds NaN"),
    ("inf-in-raw-bytes", "POST", "/v1/infer", raw(WITH_INF, "1,3,64,64"), 400, "NaN or infinite"),
    (
        "beyond-float32",
        "POST",
        "/v1/infer",
        {"json": {"shape": ONE, "data": [1e39] * N}},
        400,
        "beyond float32",
    ),
    (
        "nan-in-v2-json",
        "POST",
        V2,
        text_json(json.dumps(v2_json()).replace("0.5", "NaN", 1)),
        400,
        "holds NaN",
    ),
    ("json-100000-deep-v1", "POST", "/v1/infer", text_json(DEEP), 400, "nested too deeply"),
    ("json-100000-deep-v2", "POST", V2, text_json(DEEP), 400, "nested too deeply"),
    (
        "png-30000x30000",
        "POST",
        "/v1/classify",
        {"content": png_header(30000, 30000), "headers": {"content-type": "image/png"}},
        413,
        "resize it",
    ),
    (
        "png-over-pixel-limit",
        "POST",
        "/v1/classify",
        {"content": png_header(10000, 5000), "headers": {"content-type": "image/png"}},
        413,
        "declares 10000x5000 pixels",
    ),
    (
        "truncated-jpeg",
        "POST",
        "/v1/classify",
        {"content": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "headers": {"content-type": "image/jpeg"}},
        400,
        "as an image",
    ),
    (
        "topk-superscript-two",
        "POST",
        "/v1/classify?topk=²",
        {"content": b"x", "headers": {"content-type": "image/jpeg"}},
        400,
        "topk='²'",
    ),
    (
        "topk-arabic-indic-three",
        "POST",
        "/v1/classify?topk=٣",
        {"content": b"x", "headers": {"content-type": "image/jpeg"}},
        400,
        "topk='٣'",
    ),
    (
        "topk-above-classes",
        "POST",
        "/v1/classify?topk=1001",
        {"content": b"x", "headers": {"content-type": "image/jpeg"}},
        400,
        "within 1..1000",
    ),
    (
        "nhwc-nesting-nchw-shape",
        "POST",
        "/v1/infer",
        {"json": {"shape": ONE, "data": NHWC}},
        400,
        "nested as [1, 64, 64, 3] but its shape is [1, 3, 64, 64]",
    ),
    ("nhwc-nesting-v2", "POST", V2, {"json": v2_json(data=NHWC)}, 400, "nested as [1, 64, 64, 3]"),
    (
        "fractional-shape",
        "POST",
        "/v1/infer",
        {"json": {"shape": [1, 3, 64.0, 64], "data": [0.0] * N}},
        400,
        "positive integers",
    ),
    (
        "negative-shape",
        "POST",
        "/v1/infer",
        {"json": {"shape": [-1, 3, 64, 64], "data": [0.0] * N}},
        400,
        "positive integers",
    ),
    (
        "zero-shape-v2",
        "POST",
        V2,
        {"json": v2_json(shape=[0, 3, 64, 64], data=[0.0])},
        400,
        "positive integers",
    ),
    (
        "boolean-shape",
        "POST",
        "/v1/infer",
        {"json": {"shape": [True, 3, 64, 64], "data": [0.0] * N}},
        400,
        "positive integers",
    ),
    ("x-shape-fraction", "POST", "/v1/infer", raw(ZEROS, "1,3,64,64.5"), 400, "X-Shape"),
    ("x-shape-fullwidth-digit", "POST", "/v1/infer", raw(ZEROS, "１,3,64,64"), 400, "X-Shape"),
    (
        "dtype-float64-v1",
        "POST",
        "/v1/infer",
        {"json": {"shape": ONE, "data": [0.0] * N, "dtype": "float64"}},
        400,
        "float32",
    ),
    (
        "datatype-fp64-v2",
        "POST",
        V2,
        {"json": v2_json(datatype="FP64")},
        400,
        "datatype 'FP64'; the model takes FP32",
    ),
    ("strings-as-data", "POST", V2, {"json": v2_json(data=["0.5"] * N)}, 400, "holds strings"),
    (
        "booleans-as-data",
        "POST",
        "/v1/infer",
        {"json": {"shape": [2], "data": [True, False]}},
        400,
        "holds booleans",
    ),
    (
        "not-utf8-json",
        "POST",
        "/v1/infer",
        {"content": b'{"data": "\xff"}', "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    ("top-level-array", "POST", V2, {"json": [1, 2, 3]}, 400, '"inputs"'),
    (
        "batch-over-max",
        "POST",
        V2,
        {"json": v2_json(shape=[9, *SHAPE], data=[0.0] * 9 * N)},
        400,
        "max_batch=8",
    ),
    (
        "binary-header-length-too-big",
        "POST",
        V2,
        binary_v2(BINARY_HEADER, ZEROS.tobytes(), declared=10**9),
        400,
        "Inference-Header-Content-Length",
    ),
    (
        "binary-size-mismatch",
        "POST",
        V2,
        binary_v2(BINARY_HEADER, ZEROS.tobytes()[:-4]),
        400,
        "binary_data_size",
    ),
    (
        "oversized-body",
        "POST",
        "/v1/infer",
        {"content": b"\0" * (LIMIT + 1), "headers": {"content-type": "application/octet-stream"}},
        413,
        f"limit of {LIMIT} bytes",
    ),
    (
        "text-plain-to-infer",
        "POST",
        "/v1/infer",
        {"content": b"1,2,3", "headers": {"content-type": "text/plain"}},
        415,
        "application/octet-stream",
    ),
    ("json-to-classify", "POST", "/v1/classify", {"json": {"image": "x"}}, 415, "multipart/form-data"),
    (
        "multipart-to-v2",
        "POST",
        V2,
        {"files": {"file": ("x", b"x")}},
        415,
        "not accepted by the v2 infer endpoint",
    ),
    (
        "gzip-to-v2",
        "POST",
        V2,
        {"content": b"x", "headers": {"content-encoding": "gzip"}},
        415,
        "Content-Encoding",
    ),
    (
        "unknown-model",
        "POST",
        "/v2/models/resnet50/infer",
        {"json": v2_json()},
        404,
        "unknown model 'resnet50'",
    ),
    ("unknown-version", "GET", f"/v2/models/{MODEL}/versions/7", {}, 404, "no version '7'"),
    ("get-on-post-endpoint", "GET", "/v1/infer", {}, 405, "not allowed"),
    ("unknown-path", "GET", "/v3/anything", {}, 404, "no endpoint"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_4xx_without_traceback(served, method, path, kwargs, status, fragment):
    service, _, log = served
    logged = len(log.lines)
    with httpx.Client(base_url=service.url, timeout=WAIT_S) as client:
        r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    message = r.json()["error"]
    assert fragment in message and "\n" not in message and len(message) <= 500
    new = log.lines[logged:]
    assert not [line for line in new if "Traceback" in line or line.startswith(("ERROR", "CRITICAL"))], new


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)
