"""The request and response bodies, as pydantic models that both parse the requests and make the schema.

One declaration per rule: a model's field says what it takes (type, bounds from
:mod:`msmlp.serve.limits`, a description that reads "must be ..."), :func:`parse_body` validates a body
with it and turns the first violation into one :class:`~msmlp.errors.InputError` line quoting the field,
the value and that description, and :func:`request_body` gives the route's OpenAPI request body from the
same model. JSON text is decoded by :func:`msmlp.serve.codecs.parse_json` first (not pydantic's parser),
so NaN literals, bad UTF-8 and deep nesting keep their own clear messages. What depends on the model being
served (its input name, item shape, classes) is checked by the routes after this.
"""

from __future__ import annotations

import inspect
import reprlib
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from msmlp.errors import InputError
from msmlp.serve import codecs
from msmlp.serve.limits import MAX_DIM, MAX_RANK

M = TypeVar("M", bound=BaseModel)

SHAPE_RULE = f"a list of 1..{MAX_RANK} positive integers, e.g. [1, 3, 224, 224]"
Dim = Annotated[int, Field(strict=True, ge=1, le=MAX_DIM)]  # strict: 64.0 and true are not dimensions
Shape = Annotated[list[Dim], Field(min_length=1, max_length=MAX_RANK, description=SHAPE_RULE)]
NO_SHARED_MEMORY = "absent: shared memory is not supported by this server; send the tensor in the body"
_SHAPE = TypeAdapter(Shape)
_SHOWN = reprlib.Repr()  # a bounded repr: a bad field can hold a whole body
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 3, 8, 4, 40, 40


# -- /v1 ----------------------------------------------------------------------------------------------
class TensorRequest(BaseModel):
    """A JSON object {"shape": [N, C, H, W], "data": [numbers]}: float32 values, flat or nested as shape."""

    shape: list[Dim] | None = Field(None, min_length=1, max_length=MAX_RANK, description=SHAPE_RULE)
    data: list[Any] = Field(min_length=1, description="a non-empty list of numbers, flat or nested as shape")
    dtype: Literal["float32"] = Field("float32", description="'float32', the only type taken")


class Prediction(BaseModel):
    index: int
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class InferResponse(BaseModel):
    shape: list[int]
    logits: list[Any]


class ErrorResponse(BaseModel):
    error: str
    type: str | None = None


# -- /v2 (KServe v2 inference request) -----------------------------------------------------------------
class RequestParameters(BaseModel):
    """A JSON object of request parameters."""

    model_config = ConfigDict(extra="allow")
    binary_data_output: StrictBool = Field(False, description="a boolean: all outputs as binary data")
    shared_memory_region: None = Field(None, description=NO_SHARED_MEMORY)


class TensorParameters(BaseModel):
    """A JSON object of tensor parameters."""

    model_config = ConfigDict(extra="allow")
    binary_data_size: Annotated[int, Field(strict=True, ge=0)] | None = Field(
        None, description="the byte count of this tensor's data after the JSON header"
    )
    shared_memory_region: None = Field(None, description=NO_SHARED_MEMORY)


class Tensor(BaseModel):
    """A JSON object {"name", "shape", "datatype", "data"} (or parameters.binary_data_size)."""

    name: str = Field(description="a string, the model's input name")
    shape: Shape
    datatype: str = Field(description="a string, the tensor's datatype ('FP32')", examples=["FP32"])
    parameters: TensorParameters | None = Field(None, description="a JSON object of tensor parameters")
    data: list[Any] | None = Field(None, description="a list of numbers, row-major, flat or nested as shape")


class OutputParameters(BaseModel):
    """A JSON object of output parameters."""

    model_config = ConfigDict(extra="allow")
    binary_data: StrictBool | None = Field(None, description="a boolean (absent: binary_data_output)")
    classification: Annotated[int, Field(strict=True, ge=0)] = Field(
        0, description="an integer >= 0: the top k classes as 'score:index:label' strings (0: logits)"
    )


class RequestedOutput(BaseModel):
    """A JSON object like {"name": "logits"}."""

    name: str = Field(description="a string, the model's output name")
    parameters: OutputParameters | None = Field(
        None, description="a JSON object of output parameters", examples=[{"binary_data": True}]
    )


class InferRequest(BaseModel):
    """A JSON object with "inputs": [{"name", "shape", "datatype", "data"}], and optionally "outputs"."""

    id: str | None = Field(None, description="a string, echoed in the response")
    parameters: RequestParameters | None = Field(None, description="a JSON object of request parameters")
    inputs: list[Tensor] = Field(min_length=1, description='a list of tensor objects {"name", "shape", ...}')
    outputs: list[RequestedOutput] | None = Field(
        None, min_length=1, description='a non-empty list of objects like {"name": "logits"}'
    )


# -- parsing ------------------------------------------------------------------------------------------
def parse_body(model: type[M], body: bytes, what: str) -> M:
    """JSON body text to ``model``, or an :class:`InputError` that names the field and what it must be."""
    payload = codecs.parse_json(body, what)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InputError(_message(model, payload, exc.errors(include_url=False)[0], what)) from None


def parse_shape_header(raw: str | None, header: str = "X-Shape") -> tuple[int, ...]:
    """``"1,3,224,224"``: ASCII digits and commas only, then the same rule as a JSON shape."""
    parts = (raw or "").replace(" ", "").split(",")
    if all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts):
        try:
            return tuple(_SHAPE.validate_python([int(p) for p in parts]))
        except ValidationError:
            pass
    raise InputError(f"header {header} {raw!r} must be 1..{MAX_RANK} positive integers like 1,3,224,224")


def _message(model: type[BaseModel], payload: Any, error: dict[str, Any], what: str) -> str:
    """``JSON body shape [1, 3, 64.0, 64] must be a list of 1..8 positive integers, ...``."""
    loc, cls, field, depth = error["loc"], model, None, 0
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if cls is None or part not in cls.model_fields:
            break
        field, depth = cls.model_fields[part], i + 1
        cls = _model_in(field.annotation)
    if field is None:  # the body itself is not an object
        return f"{what} must be {_lower_first(inspect.cleandoc(model.__doc__ or 'a JSON object'))}"
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[:depth]).lstrip(".")
    rule = _rule(field) or error.get("msg", "valid")
    if error["type"] == "missing":
        return f"{what} has no {path}; it must be {rule}"
    value = payload
    for part in loc[:depth]:
        value = value[part]
    return f"{what} {path} {_SHOWN.repr(value)} must be {rule}"


def _rule(field: FieldInfo) -> str | None:
    if field.description:
        return field.description
    inner = _model_in(field.annotation)
    return _lower_first(inspect.cleandoc(inner.__doc__)) if inner and inner.__doc__ else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: ``Tensor`` for ``list[Tensor]``, ``X`` for ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _model_in(arg):
            return found
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# -- OpenAPI ------------------------------------------------------------------------------------------
BINARY = {"schema": {"type": "string", "format": "binary"}}


def request_body(content: dict[str, type[BaseModel] | dict[str, Any]]) -> dict[str, Any]:
    """A route's ``openapi_extra``: its request body by media type, JSON ones from their models.

    The routes read their bodies themselves (several media types per route, strict decoding), so
    FastAPI cannot derive the body; the schema is the model's, with its definitions inlined.
    """
    return {
        "requestBody": {
            "required": True,
            "content": {
                media: {"schema": json_schema(spec)} if isinstance(spec, type) else spec
                for media, spec in content.items()
            },
        }
    }


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with each ``$ref`` replaced by its definition (OpenAPI resolves a
    ``$ref`` from the document root, where an operation's own ``$defs`` are not)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = inline(defs[node["$ref"].rsplit("/", 1)[1]])
                return {**target, **{k: inline(v) for k, v in node.items() if k != "$ref"}}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)
