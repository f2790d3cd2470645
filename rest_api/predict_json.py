"""POST /models/{name}/predict: the one JSON predict path, and the OpenAPI operation for it.

A plain ASGI endpoint in the app's own routing. The edge middleware (request log, auth, body
limits) has run before it, and FastAPI's exception handlers answer whatever it raises; what
it skips is FastAPI's per-request dependency solving and response classes, which cost more
than a compiled forest's predict. As it declares nothing for FastAPI to read, its Swagger
entry is written out below from the same pydantic models and the same `proba` parser.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic.json_schema import models_json_schema
from starlette.types import Receive, Scope, Send

from ML.errors import InvalidInput
from ML.prediction import ModelInput, ServedModel
from rest_api.auth import authorize
from rest_api.backend import Backend
from rest_api.errors import ApiError
from rest_api.metrics import count_predicted_rows
from rest_api.plain_route import PlainRoute, read_body, send_json
from rest_api.query_keys import refuse_unknown_keys
from rest_api.request_headers import request_headers
from rest_api.schemas import (
    MODEL_NAME_DESCRIPTION,
    MODEL_NAME_SCHEMA,
    ErrorView,
    PredictRequest,
    PredictResponse,
    error_responses,
)
from rest_api.users import Role

PATH = "/models/{name}/predict"
NEEDED_ROLE = Role.PREDICTOR
PROBA_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
PROBA_ONLY = frozenset({"proba"})
# The two shapes of a body, compared with its keys without building a set per request.
ROWS_ONLY = frozenset({"rows"})
COLUMNS_ONLY = frozenset({"columns"})
PROBA_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
# The one description of `proba`, for every route that takes it.
PROBA_PARAMETER: dict[str, Any] = {
    "name": "proba",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "also return class probabilities: true or false "
    "(also accepted, any case: 1/0, yes/no, on/off, t/f, y/n)",
}


def parse_proba(value: str | None) -> bool:
    """The `proba` query value of any route: absent is false; anything unknown is a 422."""
    if value is None:
        return False
    lowered = value.lower()
    if lowered in PROBA_TRUE:
        return True
    if lowered in PROBA_FALSE:
        return False
    raise ApiError(
        422,
        f"proba must be true or false, not {value[:40]!r}",
        details=[{"field": "proba", "error": "must be true or false"}],
    )


def is_json(content_type: str | None) -> bool:
    """application/json in any case, with or without parameters such as charset."""
    if content_type is None:
        return True  # a body without a Content-Type is read as JSON
    return content_type.partition(";")[0].strip().lower() == "application/json"


class PredictJsonEndpoint:
    """Parses the request, checks the role and proba, predicts, answers: all of it, here."""

    def __init__(self) -> None:
        # The app's backend while its lifespan runs (PredictJsonRoute.serve): read here, not
        # from app.state, whose every read first fails as an attribute and then looks the
        # name up in a dict (Starlette's State.__getattr__), ~2,000 instructions a request.
        self.backend: Backend | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorize(scope["state"].get("user"), NEEDED_ROLE)
        query = scope["query_string"]
        proba = parse_proba(_proba_query(query)) if query else False
        raw_content_type = request_headers(scope).get(b"content-type")
        if raw_content_type != b"application/json":  # what clients send, read without decoding
            content_type = None if raw_content_type is None else raw_content_type.decode("latin-1")
            if not is_json(content_type):
                raise ApiError(415, f"send Content-Type: application/json, not {content_type!r}")
        backend: Backend = self.backend or scope["app"].state.backend
        name = scope["path_params"]["name"]
        # A cached model without awaiting a coroutine (the usual case); served_model loads one.
        model = backend.models.cached(name) or await backend.served_model(name)
        body = await read_body(scope, receive) or b""  # b"": a client gone before its body
        inputs = parse_predict_body(body, model, backend.settings.max_predict_rows)
        prediction = await model.predict_async(inputs, with_probabilities=proba)
        count_predicted_rows(model.name, len(inputs))
        answer: dict[str, Any] = {
            "model": model.name,
            "version": model.version,
            "predictions": prediction.labels,
        }
        if prediction.probabilities is not None:
            answer["probabilities"] = prediction.probabilities
        await send_json(send, 200, orjson.dumps(answer))


def parse_predict_body(body: bytes, model: ServedModel, max_rows: int) -> ModelInput:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict) or not (
        payload.keys() == ROWS_ONLY or payload.keys() == COLUMNS_ONLY
    ):
        others = sorted(set(payload) - {"rows", "columns"}) if isinstance(payload, dict) else []
        raise InvalidInput(
            (f"unexpected keys {', '.join(map(repr, others))[:200]}; " if others else "")
            + 'send {"rows": [{"feature": value, ...}, ...]} or {"columns": {"feature": [values]}}'
            + (" (probabilities: ?proba=true)" if "proba" in others else "")
        )
    if "rows" in payload:
        rows = payload["rows"]
        if not isinstance(rows, list) or not _are_objects(rows):
            raise InvalidInput('"rows" must be a list of objects, one per row')
        _check_row_count(len(rows), max_rows)
        return model.inputs_from_rows(rows)
    columns = payload["columns"]
    if not isinstance(columns, dict) or not all(isinstance(v, list) for v in columns.values()):
        raise InvalidInput('"columns" must be an object of lists, one list per feature')
    _check_row_count(max((len(v) for v in columns.values()), default=0), max_rows)
    return model.inputs_from_columns(columns)


def _are_objects(rows: list[Any]) -> bool:
    # A loop, not all() over a generator: ~2,000 instructions less per request.
    for row in rows:  # noqa: SIM110 (see above)
        if not isinstance(row, dict):
            return False
    return True


def _check_row_count(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise ApiError(
            413,
            f"{count} rows is over the limit of {max_rows} per JSON request; "
            "send large inputs to /models/{name}/predict/csv",
        )


def _proba_query(query_string: bytes) -> str | None:
    """The last value of `proba`, as Starlette's QueryParams.get gives it; any other key is
    refused, like the FastAPI routes' (rest_api/query_keys.py)."""
    if not query_string:
        return None
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    refuse_unknown_keys((name for name, _ in pairs), PROBA_ONLY)
    return pairs[-1][1] if pairs else None


class PredictJsonRoute(PlainRoute):
    """The JSON predict endpoint's route, first in the app's routing."""

    needed_role = NEEDED_ROLE  # read by the edge, like a RoleCheck

    def __init__(self) -> None:
        self.predict = PredictJsonEndpoint()
        super().__init__(PATH, self.predict, methods=["POST"], name="predict_json")

    def serve(self, backend: Backend | None) -> None:
        """Predict with `backend` (the lifespan's, opened), or None once it is closed."""
        self.predict.backend = backend


def document_predict_json(openapi: dict[str, Any]) -> None:
    """Add the JSON predict operation, and the schemas it names, to an OpenAPI document."""
    _, definitions = models_json_schema(
        [
            (PredictRequest, "validation"),
            (PredictResponse, "serialization"),
            (ErrorView, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
    openapi["components"].setdefault("securitySchemes", {}).setdefault(
        "HTTPBasic", {"type": "http", "scheme": "basic"}
    )
    # The edge's answers (401, 413, 422, ...) are added to every route by openapi_document.
    errors = error_responses(404, 409, 415)
    openapi["paths"].setdefault(PATH, {})["post"] = {
        "tags": ["predictions"],
        "summary": "Predict labels for JSON rows (or columns)",
        "operationId": "predict_json",
        "security": [{"HTTPBasic": []}],
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "description": MODEL_NAME_DESCRIPTION,
                "schema": MODEL_NAME_SCHEMA,
            },
            PROBA_PARAMETER,
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("PredictRequest")}},
        },
        "responses": {
            "200": {
                "description": "labels as in the training data; probabilities if asked",
                "content": {"application/json": {"schema": _ref("PredictResponse")}},
            },
            **{
                str(status): {
                    "description": answer["description"],
                    "content": {"application/json": {"schema": _ref("ErrorView")}},
                }
                for status, answer in sorted(errors.items(), key=lambda item: str(item[0]))
            },
        },
    }


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}
