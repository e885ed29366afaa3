"""The KServe v2 / Triton HTTP protocol beside /v1, so Triton's clients work unchanged.

Server: ``GET /v2`` (metadata and extensions), ``/v2/health/live``, ``/v2/health/ready``. Model (one
model, version "1"): ``GET /v2/models/{name}[/versions/{v}]`` (metadata), ``.../ready``, ``.../config``
(Triton's model-config JSON), ``.../stats`` (Triton's statistics), ``POST .../infer``. Inference takes
JSON tensors or the binary tensor data extension: the JSON header, then raw little-endian bytes, with
``Inference-Header-Content-Length`` and per-tensor ``parameters.binary_data_size``; outputs come back
binary when asked (``binary_data`` per output or ``binary_data_output`` for all), and the classification
extension (``parameters.classification: k``) answers "score:index:label" strings. Requests go through
the same DynamicBatcher as /v1; errors are the protocol's ``{"error": message}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from msmlp.errors import InputError
from msmlp.serve import codecs, schemas
from msmlp.serve.errors import NotFoundError, NotReadyError, UnsupportedMediaTypeError
from msmlp.serve.schemas import BINARY, InferRequest, RequestedOutput, Tensor

if TYPE_CHECKING:
    from msmlp.serve.app import Service

VERSION = "1"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics"]
HEADER_LENGTH = "inference-header-content-length"
_BODY_TYPES = ("", "application/json", "application/octet-stream")


@dataclass(frozen=True)
class _Output:
    name: str
    binary: bool
    classes: int  # 0: the logits; k: the classification extension's top k


def add_v2_routes(app: FastAPI, service: Service) -> None:
    """Register the protocol's routes on ``app``."""
    from msmlp import __version__

    def model_route(path: str, **kw: Any) -> Any:
        def register(fn: Any) -> Any:
            app.get(f"/v2/models/{{name}}{path}", tags=["v2"], **kw)(fn)
            app.get(f"/v2/models/{{name}}/versions/{{version}}{path}", tags=["v2"], **kw)(fn)
            return fn

        return register

    @app.get("/v2", tags=["v2"], summary="server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "msmlp", "version": __version__, "extensions": EXTENSIONS}

    @app.get("/v2/health/live", tags=["v2"], summary="server live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"], summary="server ready (400 when not)", responses={400: {}})
    async def ready() -> JSONResponse:
        ok, _ = service.ready()
        return JSONResponse({"ready": ok}, 200 if ok else 400)

    @model_route("", summary="model metadata", responses={404: {}})
    async def metadata(name: str, version: str = "") -> dict[str, Any]:
        _check_model(service, name, version)
        info = service.backend.info
        return {
            "name": service.model_name,
            "versions": [VERSION],
            "platform": f"msmlp_{info.backend}",
            "inputs": [{"name": info.input_name, "datatype": "FP32", "shape": [-1, *info.input_shape[1:]]}],
            "outputs": [
                {"name": name, "datatype": "FP32", "shape": [-1, *dims]}
                for name, dims in output_dims(service)
            ],
        }

    @model_route("/ready", summary="model ready (400 when not)", responses={400: {}, 404: {}})
    async def model_ready(name: str, version: str = "") -> JSONResponse:
        _check_model(service, name, version)
        ok, _ = service.ready()
        return JSONResponse({"name": service.model_name, "ready": ok}, 200 if ok else 400)

    @model_route("/config", summary="Triton model configuration", responses={404: {}})
    async def config(name: str, version: str = "") -> dict[str, Any]:
        _check_model(service, name, version)
        return model_config(service)

    @model_route("/stats", summary="Triton model statistics", responses={404: {}})
    async def stats(name: str, version: str = "") -> dict[str, Any]:
        _check_model(service, name, version)
        return {"model_stats": [service.stats.to_dict(service.model_name, VERSION)]}

    infer_doc: dict[str, Any] = {
        "summary": "inference: JSON tensors, or the binary tensor data extension",
        "responses": {400: {}, 404: {}, 413: {}, 415: {}, 503: {}},
        "openapi_extra": schemas.request_body(
            {"application/json": InferRequest, "application/octet-stream": BINARY}
        ),
    }

    async def infer(request: Request, name: str, version: str = "") -> Response:
        start = time.perf_counter()
        try:
            response = await _infer(service, request, name, version)
        except BaseException:
            service.stats.observe_request(False, time.perf_counter() - start)
            raise
        service.stats.observe_request(True, time.perf_counter() - start)
        return response

    async def infer_latest(request: Request, name: Annotated[str, Path()]) -> Response:
        return await infer(request, name)

    async def infer_version(
        request: Request, name: Annotated[str, Path()], version: Annotated[str, Path()]
    ) -> Response:
        return await infer(request, name, version)

    app.post("/v2/models/{name}/infer", tags=["v2"], **infer_doc)(infer_latest)
    app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], **infer_doc)(infer_version)


def _check_model(service: Service, name: str, version: str) -> None:
    if name != service.model_name:
        raise NotFoundError(f"unknown model {name[:80]!r}; this server serves {service.model_name!r}")
    if version not in ("", VERSION):
        raise NotFoundError(f"model {name!r} has no version {version[:20]!r}; versions: [{VERSION!r}]")
    if not service.backend.loaded:
        raise NotReadyError(f"model {name!r} is not loaded yet; retry shortly")


def output_dims(service: Service) -> list[tuple[str, list[int]]]:
    """Each output's name and dims after the batch axis (-1: dynamic): the logits, or a feature
    graph's stage maps (H, W dynamic with a size profile)."""
    layout = service.features
    if layout is None:
        return [(service.backend.info.output_name, [service.num_classes])]
    return [
        (o.name, [o.channels, *(d if isinstance(d, int) else -1 for d in layout.output_dims(o))])
        for o in layout.outputs
    ]


def model_config(service: Service) -> dict[str, Any]:
    """Triton's model configuration (the JSON form of config.pbtxt) for what this server runs."""
    info = service.backend.info
    batcher = service.batcher
    return {
        "name": service.model_name,
        "platform": "",
        "backend": f"msmlp_{info.backend}",
        "max_batch_size": batcher.max_batch,
        "input": [
            {
                "name": info.input_name,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NONE",
                "dims": list(info.input_shape[1:]),
            }
        ],
        "output": [{"name": n, "data_type": "TYPE_FP32", "dims": dims} for n, dims in output_dims(service)],
        "dynamic_batching": {
            "preferred_batch_size": [batcher.max_batch],
            "max_queue_delay_microseconds": int(batcher.max_delay_ms * 1000),
        },
        "instance_group": [{"name": service.model_name, "count": 1, "kind": "KIND_CPU"}],
    }


async def _infer(service: Service, request: Request, name: str, version: str) -> Response:
    _check_model(service, name, version)
    ctype = codecs.content_type(request.headers)
    if ctype not in _BODY_TYPES:
        raise UnsupportedMediaTypeError(
            f"content type {ctype!r} is not accepted by the v2 infer endpoint; send application/json "
            "(or the binary tensor extension: application/octet-stream with Inference-Header-Content-Length)"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding[:20]!r} is not supported; send it uncompressed"
        )
    header_length = request.headers.get(HEADER_LENGTH)
    body = await request.body()
    x, outputs, request_id, k_max = await run_in_threadpool(_decode_request, service, body, header_length)
    if k_max > service.num_classes:
        raise InputError(f"classification count {k_max} exceeds the model's {service.num_classes} classes")
    result = await service.batcher.infer_async(x)  # logits, or a feature graph's named outputs
    return await run_in_threadpool(_encode_response, service, result, outputs, request_id)


def _decode_request(
    service: Service, body: bytes, header_length: str | None
) -> tuple[np.ndarray, list[_Output], str | None, int]:
    """The input array, the outputs asked for, the request id, and the largest classification count."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.isascii() or not header_length.isdigit() or int(header_length) > len(body):
            raise InputError(
                f"header Inference-Header-Content-Length {header_length[:20]!r} must be a byte count within "
                f"the body's {len(body)} bytes"
            )
        header, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    req = schemas.parse_body(InferRequest, header, "inference request")
    binary_default = req.parameters.binary_data_output if req.parameters else False
    x = _input_array(service, req.inputs, binary)
    outputs = _requested_outputs(service, req.outputs, binary_default)
    return x, outputs, req.id, max((o.classes for o in outputs), default=0)


def _input_array(service: Service, inputs: list[Tensor], binary: memoryview | bytes) -> np.ndarray:
    """What the served model takes, checked on a request the schema has already checked."""
    info = service.backend.info
    if len(inputs) != 1:
        raise InputError(f"the model takes exactly one input, {info.input_name!r}; got {len(inputs)} inputs")
    spec = inputs[0]
    if spec.name != info.input_name:
        raise InputError(f"unknown input {spec.name[:80]!r}; the model's input is {info.input_name!r}")
    what = f"input {info.input_name!r}"
    if spec.datatype != "FP32":
        raise InputError(f"{what} has datatype {spec.datatype[:20]!r}; the model takes FP32")
    shape, item = tuple(spec.shape), tuple(info.input_shape[1:])
    if len(shape) != len(item) + 1 or any(i not in (-1, d) for i, d in zip(item, shape[1:])):
        raise InputError(
            f"{what} has shape {list(shape)}; the model takes [N, {', '.join(map(str, item))}] "
            f"with 1 <= N <= {service.batcher.max_batch}"
        )
    size = spec.parameters.binary_data_size if spec.parameters else None
    if size is None:
        if len(binary):
            raise InputError(
                f"the body has {len(binary)} bytes after the JSON header but no input declares binary_data_size"
            )
        if spec.data is None:
            raise InputError(f"{what} has neither 'data' nor parameters.binary_data_size")
        return codecs.tensor_from_json(spec.data, shape, what)
    if size != len(binary):
        raise InputError(
            f"{what} declares binary_data_size {size}, but {len(binary)} bytes follow the JSON header"
        )
    if spec.data is not None:
        raise InputError(f"{what} has both 'data' and binary_data_size; send one")
    return codecs.tensor_from_bytes(binary, shape, what)


def _requested_outputs(
    service: Service, outputs: list[RequestedOutput] | None, binary_default: bool
) -> list[_Output]:
    names = [n for n, _ in output_dims(service)]
    if outputs is None:
        return [_Output(n, binary_default, 0) for n in names]
    found = []
    for spec in outputs:
        if spec.name not in names:
            raise InputError(f"unknown output {spec.name[:80]!r}; the model's outputs are {names}")
        params = spec.parameters
        binary = params.binary_data if params and params.binary_data is not None else binary_default
        classes = params.classification if params else 0
        if classes and service.features is not None:
            raise InputError(
                f"output {spec.name!r} is a feature map; the classification extension needs logits"
            )
        found.append(_Output(spec.name, binary, classes))
    return found


def bytes_tensor(strings: list[str]) -> bytes:
    """A BYTES tensor in the v2 binary extension's layout: per element, its UTF-8 length as 4 bytes
    little-endian, then the bytes (what ``tritonclient.utils.serialize_byte_tensor`` writes; the serving
    install has no tritonclient)."""
    encoded = [s.encode("utf-8") for s in strings]
    return b"".join(len(b).to_bytes(4, "little") + b for b in encoded)


def _encode_response(
    service: Service,
    result: np.ndarray | dict[str, np.ndarray],
    outputs: list[_Output],
    request_id: str | None,
) -> Response:
    entries, blobs = [], []
    labels = service.class_labels
    for out in outputs:
        logits = result[out.name] if isinstance(result, dict) else result
        if out.classes:
            top = np.argsort(-logits, axis=1, kind="stable")[:, : out.classes]
            strings = [
                f"{logits[i, j]:f}:{j}" + (f":{labels[j]}" if labels else "")
                for i in range(len(logits))
                for j in top[i]
            ]
            entry: dict[str, Any] = {
                "name": out.name,
                "datatype": "BYTES",
                "shape": [len(logits), out.classes],
            }
            if out.binary:
                blob = bytes_tensor(strings)
            else:
                entry["data"] = strings
        else:
            entry = {"name": out.name, "datatype": "FP32", "shape": list(logits.shape)}
            if out.binary:
                blob = logits.astype("<f4").tobytes()
            else:
                entry["data"] = logits.ravel().tolist()
        if out.binary:
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        entries.append(entry)
    body: dict[str, Any] = {"model_name": service.model_name, "model_version": VERSION, "outputs": entries}
    if request_id is not None:
        body["id"] = request_id
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
