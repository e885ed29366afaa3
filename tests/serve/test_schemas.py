"""One source of truth for request bodies: the pydantic models that parse them are the OpenAPI schema the
service publishes, their bounds are the limits in serve/limits.py, and a violation is one line naming the
field, the value and the field's own description. Metric labels are the routes that matched."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from msmlp.errors import InputError
from msmlp.models.registry import get_config
from msmlp.runtime.torch_backend import TorchBackend
from msmlp.serve import create_app, schemas
from msmlp.serve.limits import MAX_DIM, MAX_RANK
from msmlp.serve.metrics import UNMATCHED

from .support import LIMIT, MODEL, SHAPE, WAIT_S

TENSOR = {"name": "input", "shape": [1, *SHAPE], "datatype": "FP32", "data": [0.5]}


def request_models(model: type[BaseModel]) -> set[type[BaseModel]]:
    found = {model}
    for field in model.model_fields.values():
        inner = schemas._model_in(field.annotation)
        if inner is not None:
            found |= request_models(inner)
    return found


@pytest.mark.parametrize("model", [schemas.TensorRequest, schemas.InferRequest], ids=["v1", "v2"])
def test_every_request_field_says_what_it_must_be(model):
    """Error messages are the field descriptions, so a field without one would give a bare message."""
    models = request_models(model)
    assert len(models) >= (1 if model is schemas.TensorRequest else 6)
    for cls in models:
        assert cls.__doc__, cls
        for name, field in cls.model_fields.items():
            assert schemas._rule(field), f"{cls.__name__}.{name} has no description"


@pytest.mark.parametrize(
    ("model", "payload", "message"),
    [
        (
            schemas.TensorRequest,
            {"shape": [1, 3, 64.0, 64], "data": [0]},
            "body shape [1, 3, 64.0, 64] must be a list of 1..8 positive integers",
        ),
        (schemas.TensorRequest, {"shape": [True], "data": [0]}, "body shape [True] must be a list of 1..8"),
        (schemas.TensorRequest, {"data": [0], "dtype": "float64"}, "body dtype 'float64' must be 'float32'"),
        (schemas.TensorRequest, {"shape": [1]}, "body has no data; it must be a non-empty list of numbers"),
        (schemas.TensorRequest, [1, 2], 'body must be a JSON object {"shape"'),
        (schemas.InferRequest, [1, 2], 'body must be a JSON object with "inputs"'),
        (schemas.InferRequest, {"inputs": [1]}, "body inputs [1] must be a list of tensor objects"),
        (
            schemas.InferRequest,
            {"inputs": [{**TENSOR, "shape": [1, 0]}]},
            "body inputs[0].shape [1, 0] must be a list of 1..8 positive integers",
        ),
        (
            schemas.InferRequest,
            {"inputs": [{**TENSOR, "parameters": {"shared_memory_region": "r"}}]},
            "shared_memory_region 'r' must be absent: shared memory is not supported",
        ),
        (
            schemas.InferRequest,
            {"inputs": [TENSOR], "outputs": [{"name": "logits", "parameters": {"classification": 2.0}}]},
            "body outputs[0].parameters.classification 2.0 must be an integer >= 0",
        ),
        (
            schemas.InferRequest,
            {"inputs": [TENSOR], "outputs": []},
            "body outputs [] must be a non-empty list",
        ),
        (schemas.InferRequest, {"inputs": [TENSOR], "id": 5}, "body id 5 must be a string"),
        (
            schemas.InferRequest,
            {"inputs": [TENSOR], "parameters": {"binary_data_output": "yes"}},
            "parameters.binary_data_output 'yes' must be a boolean",
        ),
    ],
)
def test_a_violation_is_one_line_naming_field_value_and_rule(model, payload, message):
    with pytest.raises(InputError) as info:
        schemas.parse_body(model, json.dumps(payload).encode(), "the body")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_large_bad_value_is_quoted_briefly():
    payload = {"inputs": [{**TENSOR, "shape": list(range(1, 100_000))}]}
    with pytest.raises(
        InputError, match=r"inputs\[0\]\.shape \[1, 2, 3, 4, 5, 6, 7, 8, \.\.\.\] must"
    ) as info:
        schemas.parse_body(schemas.InferRequest, json.dumps(payload).encode(), "request")
    assert len(str(info.value)) < 200


def test_the_shape_limits_are_the_ones_declared():
    longest = [1] * MAX_RANK
    assert schemas.parse_shape_header(",".join(map(str, longest))) == tuple(longest)
    body = {"shape": [MAX_DIM], "data": [0]}
    assert schemas.parse_body(schemas.TensorRequest, json.dumps(body).encode(), "b").shape == [MAX_DIM]
    for shape in ([1] * (MAX_RANK + 1), [MAX_DIM + 1], []):
        with pytest.raises(InputError, match="positive integers"):
            schemas.parse_shape_header(",".join(map(str, shape)))
        with pytest.raises(InputError, match="positive integers"):
            schemas.parse_body(schemas.TensorRequest, json.dumps({"shape": shape, "data": [0]}).encode(), "b")


@pytest.fixture(scope="module")
def openapi(contributing) -> dict[str, Any]:
    backend = TorchBackend(contributing(MODEL), config=get_config(MODEL))
    return create_app(backend, get_config(MODEL), model_name=MODEL).openapi()  # no lifespan: nothing loads


def without_nulls(node: Any) -> Any:
    """FastAPI writes the OpenAPI document without null values (a field's ``"default": null``)."""
    if isinstance(node, dict):
        return {k: without_nulls(v) for k, v in node.items() if v is not None}
    return [without_nulls(v) for v in node] if isinstance(node, list) else node


def test_the_published_schema_is_the_parsing_model(openapi):
    paths = openapi["paths"]
    for path, model in (
        ("/v1/infer", schemas.TensorRequest),
        ("/v2/models/{name}/infer", schemas.InferRequest),
        ("/v2/models/{name}/versions/{version}/infer", schemas.InferRequest),
    ):
        published = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert published == without_nulls(schemas.json_schema(model)), path
    tensor = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    shape = tensor["properties"]["inputs"]["items"]["properties"]["shape"]
    assert shape["maxItems"] == MAX_RANK and shape["items"]["maximum"] == MAX_DIM


def test_every_ref_in_the_schema_resolves(openapi):
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend([node["$ref"]] if "$ref" in node else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(openapi)
    components = openapi["components"]["schemas"]
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert all(r.rsplit("/", 1)[1] in components for r in refs)


def labels(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "msmlp_requests_total"
    }


def test_metric_labels_are_the_matched_routes(served):
    service, _, _ = served
    templates = {route.path for route in service.app.routes}
    with httpx.Client(base_url=service.url, timeout=WAIT_S) as client:
        before = labels(client.get("/metrics").text)
        for i in range(5):  # invented names and paths must not grow the label set
            assert client.get(f"/v2/models/made-up-{i}/ready").status_code == 404
            assert client.get(f"/no/such/path/{i}").status_code == 404
        assert client.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200
        big = {"content": b"\0" * (LIMIT + 1), "headers": {"content-type": "application/octet-stream"}}
        assert client.post("/v1/infer", **big).status_code == 413  # refused before routing, still labelled
        after = labels(client.get("/metrics").text)

    def delta(endpoint: str, status: str) -> float:
        return after.get((endpoint, status), 0.0) - before.get((endpoint, status), 0.0)

    assert delta("/v2/models/{name}/ready", "404") == 5
    assert delta(UNMATCHED, "404") == 5
    assert delta("/v2/models/{name}/versions/{version}/ready", "200") == 1
    assert delta("/v1/infer", "413") == 1
    assert {endpoint for endpoint, _ in after} <= templates | {UNMATCHED}
