"""What the OpenAPI document promises, route by route (schemathesis checks the running server
against it in tests/system/test_openapi_conformance.py), and the answers it describes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ML.model_store import NAME_PATTERN

ERROR_REF = {"$ref": "#/components/schemas/ErrorView"}


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_authenticated_route_documents_the_edges_answers(openapi: dict[str, Any]) -> None:
    for method, path, operation in operations(openapi):
        responses = operation["responses"]
        if operation.get("security"):
            assert {"401", "422", "429", "503"} <= set(responses), (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= set(responses), (method, path)
        for status, answer in responses.items():
            if status.startswith(("4", "5")) and path not in ("/train_model", "/get_prediction"):
                schema = answer["content"]["application/json"]["schema"]
                assert schema in (ERROR_REF, {"$ref": "#/components/schemas/HealthView"})
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def test_403_is_documented_where_a_role_may_be_refused(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    assert "403" in paths["/models"]["get"]["responses"]  # trainer
    assert "403" in paths["/models/{name}"]["delete"]["responses"]  # admin
    assert "403" not in paths["/models/{name}/predict"]["post"]["responses"]  # any user
    assert "403" not in paths["/metrics"]["get"]["responses"]


def test_model_names_carry_their_pattern(openapi: dict[str, Any]) -> None:
    for method, path, operation in operations(openapi):
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "name" and parameter["in"] == "path":
                assert parameter["schema"]["pattern"] == NAME_PATTERN.pattern, (method, path)


def test_metrics_are_documented_as_text(openapi: dict[str, Any], client: TestClient) -> None:
    content = openapi["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_form_fields_are_never_null(openapi: dict[str, Any]) -> None:
    form_ref = openapi["paths"]["/models/{name}/train"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]["$ref"]
    form = openapi["components"]["schemas"][form_ref.rsplit("/", 1)[-1]]
    assert form["properties"]["test_size"]["type"] == "number"
    assert form["properties"]["cv"]["type"] == "integer"
    assert "null" not in str(form)


@pytest.mark.parametrize(
    ("path", "takes"),
    [
        ("/jobs?limt=5", "this route takes limit, model"),
        ("/models?verbose=1", "this route takes no query parameters"),
        ("/metrics?x=1", "this route takes no query parameters"),
    ],
)
def test_unknown_query_keys_are_refused(client: TestClient, path: str, takes: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 422, answer.text
    assert takes in answer.json()["error"]["message"]


def test_known_query_keys_are_served(client: TestClient) -> None:
    assert client.get("/jobs?limit=5&model=iris").status_code == 200
    assert client.get("/health/live?cache-buster=1").status_code == 200  # probes: anything


def test_a_405_allows_every_method_of_the_path(client: TestClient) -> None:
    for path, allowed in [
        ("/models/iris", "GET, DELETE"),
        ("/models/iris/versions/1", "GET, DELETE"),
        ("/jobs/some-id", "GET, DELETE"),
        ("/models/iris/predict", "POST"),
    ]:
        answer = client.options(path)
        assert answer.status_code == 405, path
        assert answer.headers["allow"] == allowed, path
        assert answer.json()["error"]["message"].endswith(f"it allows {allowed}")
