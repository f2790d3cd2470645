"""The OpenAPI document beyond what FastAPI writes: the answers the edge gives on every route,
and forms as a multipart body can carry them.

FastAPI documents what a route declares. The edge (rest_api/middleware.py) answers before
any route runs: 401/429/503 for logins, 403 for a role, 400/413 for bodies; FastAPI's 422
is our JSON error shape, not its own. A form field cannot be null, only left out.
Schemathesis checks the running server against this document
(tests/system/test_openapi_conformance.py).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from rest_api.middleware import RoleTable
from rest_api.schemas import ERROR_DESCRIPTIONS, ErrorView
from rest_api.users import Role

ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorView"}
LOGIN_ANSWERS = (401, 429, 503)
BODY_ANSWERS = (400, 413)
FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def complete_openapi(openapi: dict[str, Any], roles: RoleTable) -> None:
    """Add the edge's answers to every operation and take null out of form fields."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorView" not in schemas:
        _, definitions = models_json_schema(
            [(ErrorView, "serialization")], ref_template="#/components/schemas/{model}"
        )
        schemas.update(definitions["$defs"])
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            if method in HTTP_METHODS:
                _add_edge_answers(operation, edge_answers(operation, method, path, roles))
                _forms_without_null(operation, schemas)
    for name in FASTAPI_ERROR_SCHEMAS:  # only FastAPI's 422 named them, and it is replaced
        if f"#/components/schemas/{name}'" not in repr(openapi):
            schemas.pop(name, None)


def edge_answers(operation: dict[str, Any], method: str, path: str, roles: RoleTable) -> set[int]:
    """The statuses the edge (and FastAPI's parsing) may answer for this operation."""
    statuses: set[int] = set()
    if operation.get("security"):
        # Every authenticated route also refuses query keys it does not take (query_keys.py).
        statuses.update((*LOGIN_ANSWERS, 422))
        needed = roles.needed_role(method.upper(), path)
        if needed is not None and needed is not Role.PREDICTOR:
            statuses.add(403)
    if "requestBody" in operation:
        statuses.update(BODY_ANSWERS)
    if "requestBody" in operation or operation.get("parameters"):
        statuses.add(422)
    return statuses


def _add_edge_answers(operation: dict[str, Any], statuses: set[int]) -> None:
    responses = operation.setdefault("responses", {})
    fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
    if "HTTPValidationError" in str(fastapi_422.get("schema")):
        del responses["422"]
    for status in sorted(statuses):
        responses.setdefault(
            str(status),
            {
                "description": ERROR_DESCRIPTIONS[status],
                "content": {"application/json": {"schema": ERROR_SCHEMA_REF}},
            },
        )


def _forms_without_null(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A multipart field is sent or left out: `anyOf [X, null]` becomes X, without `default:
    null`, so that no client (nor schemathesis) sends the text "null" for it."""
    content = operation.get("requestBody", {}).get("content", {})
    form = content.get("multipart/form-data", {}).get("schema")
    if form is None:
        return
    if "$ref" in form:
        form = schemas[form["$ref"].rsplit("/", 1)[-1]]
    for field in form.get("properties", {}).values():
        options = field.get("anyOf")
        if options is None:
            continue
        kept = [option for option in options if option.get("type") != "null"]
        if len(kept) == 1:
            del field["anyOf"]
            field.update(kept[0])
        else:
            field["anyOf"] = kept
        if field.get("default", 0) is None:
            del field["default"]
