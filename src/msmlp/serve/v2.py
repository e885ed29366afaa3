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
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from msmlp.errors import InputError
from msmlp.serve import codecs
from msmlp.serve.errors import NotFoundError, UnsupportedMediaTypeError

if TYPE_CHECKING:
    from msmlp.serve.app import Service

VERSION = "1"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics"]
HEADER_LENGTH = "inference-header-content-length"
_BODY_TYPES = ("", "application/json", "application/octet-stream")


class Tensor(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=8)
    datatype: str = Field(examples=["FP32"])
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="row-major, flat or nested as shape")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, examples=[{"binary_data": True}])


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


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
            "outputs": [{"name": info.output_name, "datatype": "FP32", "shape": [-1, service.num_classes]}],
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
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": InferRequest.model_json_schema(ref_template=_REF)},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
        },
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
    _register_schemas(app, InferRequest)


_REF = "#/components/schemas/{model}"


def _register_schemas(app: FastAPI, model: type[BaseModel]) -> None:
    """Put the request model's nested definitions where its ``$ref``s point (components/schemas)."""
    defs = model.model_json_schema(ref_template=_REF).get("$defs", {})
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            for content in _request_contents(schema):
                content.get("schema", {}).pop("$defs", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _request_contents(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        content
        for path in schema.get("paths", {}).values()
        for op in path.values()
        for content in op.get("requestBody", {}).get("content", {}).values()
    ]


def _check_model(service: Service, name: str, version: str) -> None:
    if name != service.model_name:
        raise NotFoundError(f"unknown model {name[:80]!r}; this server serves {service.model_name!r}")
    if version not in ("", VERSION):
        raise NotFoundError(f"model {name!r} has no version {version[:20]!r}; versions: [{VERSION!r}]")
    if not service.backend.loaded:
        from msmlp.serve.errors import NotReadyError

        raise NotReadyError(f"model {name!r} is not loaded yet; retry shortly")


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
        "output": [{"name": info.output_name, "data_type": "TYPE_FP32", "dims": [service.num_classes]}],
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
    logits = await service.batcher.infer_async(x)
    return await run_in_threadpool(_encode_response, service, logits, outputs, request_id)


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
    req = codecs.parse_json(header, "inference request")
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise InputError(
            'inference request must be a JSON object with "inputs": [{"name", "shape", "datatype", "data"}]'
        )
    request_id = req.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError("inference request id must be a string")
    params = _params(req, "inference request")
    if "shared_memory_region" in params:
        raise InputError("shared memory is not supported by this server; send the tensor in the body")
    x = _input_array(service, req["inputs"], binary)
    outputs = _requested_outputs(service, req.get("outputs"), bool(params.get("binary_data_output", False)))
    return x, outputs, request_id, max((o.classes for o in outputs), default=0)


def _params(obj: dict[str, Any], what: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(f"{what} parameters must be a JSON object")
    return params


def _input_array(service: Service, inputs: list[Any], binary: memoryview | bytes) -> np.ndarray:
    info = service.backend.info
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InputError(f"the model takes exactly one input, {info.input_name!r}; got {len(inputs)} inputs")
    spec = inputs[0]
    if spec.get("name") != info.input_name:
        raise InputError(
            f"unknown input {str(spec.get('name'))[:80]!r}; the model's input is {info.input_name!r}"
        )
    what = f"input {info.input_name!r}"
    if spec.get("datatype") != "FP32":
        raise InputError(f"{what} has datatype {str(spec.get('datatype'))[:20]!r}; the model takes FP32")
    shape = codecs.check_shape(spec.get("shape"), what)
    item = tuple(info.input_shape[1:])
    if shape[1:] != item:
        raise InputError(
            f"{what} has shape {list(shape)}; the model takes [N, {', '.join(map(str, item))}] "
            f"with 1 <= N <= {service.batcher.max_batch}"
        )
    params = _params(spec, what)
    if "shared_memory_region" in params:
        raise InputError("shared memory is not supported by this server; send the tensor in the body")
    size = params.get("binary_data_size")
    if size is None:
        if len(binary):
            raise InputError(
                f"the body has {len(binary)} bytes after the JSON header but no input declares binary_data_size"
            )
        if "data" not in spec:
            raise InputError(f"{what} has neither 'data' nor parameters.binary_data_size")
        return codecs.tensor_from_json(spec["data"], shape, what)
    if type(size) is not int or size != len(binary):
        raise InputError(
            f"{what} declares binary_data_size {str(size)[:20]}, but {len(binary)} bytes follow the JSON header"
        )
    if "data" in spec:
        raise InputError(f"{what} has both 'data' and binary_data_size; send one")
    return codecs.tensor_from_bytes(binary, shape, what)


def _requested_outputs(service: Service, outputs: Any, binary_default: bool) -> list[_Output]:
    name = service.backend.info.output_name
    if outputs is None:
        return [_Output(name, binary_default, 0)]
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise InputError('"outputs" must be a list of objects like {"name": "logits"}')
    found = []
    for spec in outputs:
        if spec.get("name") != name:
            raise InputError(f"unknown output {str(spec.get('name'))[:80]!r}; the model's output is {name!r}")
        params = _params(spec, f"output {name!r}")
        k = params.get("classification", 0)
        binary = params.get("binary_data", binary_default)
        if type(k) is not int or k < 0 or type(binary) is not bool:
            raise InputError(
                f"output {name!r} parameters: classification must be an integer >= 0, binary_data a boolean"
            )
        found.append(_Output(name, binary, k))
    return found


def _encode_response(
    service: Service, logits: np.ndarray, outputs: list[_Output], request_id: str | None
) -> Response:
    from msmlp.data.labels import imagenet_classes

    entries, blobs = [], []
    labels = imagenet_classes() if service.num_classes == 1000 else None
    for out in outputs:
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
                blob = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in strings)
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
