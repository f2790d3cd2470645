"""The one JSON predict path: proba spellings, media types, roles, and its Swagger entry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from testing.fastml_api import basic_auth, train
from testing.servers import ADMIN
from tests.users import PREDICTOR, TRAINER

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
URL = "/models/iris/predict"


@pytest.fixture(scope="module")
def iris_client(
    tmp_path_factory: pytest.TempPathFactory, users_file: Path, iris_train_csv: Path
) -> Iterator[TestClient]:
    """One app and one trained iris model for every case of this module."""
    tmp_path = tmp_path_factory.mktemp("predict_json")
    settings = Settings(
        model_dir=tmp_path / "models",
        log_path=tmp_path / "ML_server.log",
        service_user=ADMIN[0],
        service_pass=ADMIN[1],
        users_file=users_file,
    )
    with TestClient(create_app(settings), headers=basic_auth(ADMIN)) as client:
        assert train(client, "iris", iris_train_csv)["status"] == "succeeded"
        yield client


@pytest.mark.parametrize("spelling", ["true", "TRUE", "1", "yes", "on", "t", "Y"])
def test_proba_true_spellings(iris_client: TestClient, spelling: str) -> None:
    answer = iris_client.post(f"{URL}?proba={spelling}", json={"rows": [ROW]})
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["probabilities"][0]) == {"setosa", "versicolor", "virginica"}


@pytest.mark.parametrize("spelling", ["false", "False", "0", "no", "off", "f", "n"])
def test_proba_false_spellings(iris_client: TestClient, spelling: str) -> None:
    answer = iris_client.post(f"{URL}?proba={spelling}", json={"rows": [ROW]})
    assert answer.status_code == 200, answer.text
    assert "probabilities" not in answer.json()


@pytest.mark.parametrize("query", ["proba=maybe", "proba=", "proba=2", "proba=truee"])
def test_unknown_proba_is_one_422_on_every_route(
    iris_client: TestClient, iris_test_csv: Path, query: str
) -> None:
    json_answer = iris_client.post(f"{URL}?{query}", json={"rows": [ROW]})
    with iris_test_csv.open("rb") as file:
        csv_answer = iris_client.post(f"{URL}/csv?{query}", files={"csv_file": file})
    for answer in (json_answer, csv_answer):
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["message"].startswith("proba must be true or false")
        assert error["details"] == [{"field": "proba", "error": "must be true or false"}]
    assert json_answer.json()["error"] == csv_answer.json()["error"]


def test_csv_route_takes_the_same_spellings(iris_client: TestClient, iris_test_csv: Path) -> None:
    with iris_test_csv.open("rb") as file:
        answer = iris_client.post(f"{URL}/csv?proba=t", files={"csv_file": file})
    assert answer.status_code == 200, answer.text
    assert "probability_setosa" in answer.text.splitlines()[0]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "APPLICATION/JSON", "Application/Json; charset=UTF-8", None],
)
def test_json_media_type_in_any_case(iris_client: TestClient, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    answer = iris_client.post(URL, content=b'{"rows": [{}]}', headers=headers)
    # Reached the model: the 422 names the missing features, not the media type.
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_input"
    row = b'{"rows": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, '
    answer = iris_client.post(URL, content=row + b'"petal_width": 0.2}]}', headers=headers)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("content_type", ["text/csv", "application/jsonx", "multipart/form-data"])
def test_other_media_types_get_415(iris_client: TestClient, content_type: str) -> None:
    answer = iris_client.post(URL, content=b"{}", headers={"content-type": content_type})
    assert answer.status_code == 415
    assert "application/json" in answer.json()["error"]["message"]


def test_a_body_without_content_length_is_predicted(iris_client: TestClient) -> None:
    body = json.dumps({"rows": [ROW, ROW]}).encode()

    def chunks() -> Iterator[bytes]:  # sent chunked: the edge counts its bytes as they come
        yield from (body[:10], body[10:40], body[40:])

    answer = iris_client.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == ["setosa", "setosa"]


@pytest.mark.parametrize("user", [ADMIN, TRAINER, PREDICTOR])
def test_every_role_may_predict(iris_client: TestClient, user: tuple[str, str]) -> None:
    answer = iris_client.post(URL, json={"rows": [ROW]}, headers=basic_auth(user))
    assert answer.status_code == 200, answer.text


def test_predictor_may_not_reach_trainer_routes(iris_client: TestClient) -> None:
    answer = iris_client.get("/models/iris", headers=basic_auth(PREDICTOR))
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == "user 'pete' has role predictor; this needs trainer"


def test_request_log_and_metrics_name_the_route(iris_client: TestClient) -> None:
    assert iris_client.post(URL, json={"rows": [ROW]}).status_code == 200
    metrics = iris_client.get("/metrics").text
    assert 'route="/models/{name}/predict",status="200"' in metrics


def test_swagger_documents_what_runs(iris_client: TestClient) -> None:
    openapi = iris_client.get("/openapi.json").json()
    operation = openapi["paths"]["/models/{name}/predict"]["post"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert parameters["proba"]["schema"] == {"type": "boolean", "default": False}
    assert parameters["name"]["in"] == "path"
    assert operation["security"] == [{"HTTPBasic": []}]
    schemas = openapi["components"]["schemas"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    error = operation["responses"]["422"]["content"]["application/json"]["schema"]
    for reference in (body, answer, error):
        assert reference["$ref"].removeprefix("#/components/schemas/") in schemas
    alternatives = [ref["$ref"].rsplit("/", 1)[-1] for ref in schemas["PredictRequest"]["anyOf"]]
    assert [set(schemas[name]["properties"]) for name in alternatives] == [{"rows"}, {"columns"}]
    assert all(schemas[name]["additionalProperties"] is False for name in alternatives)
    assert {"401", "404", "413", "415", "422", "429", "503"} <= set(operation["responses"])
    assert "403" not in operation["responses"]  # every role may predict
    # The CSV route shows the very same proba parameter.
    csv_operation = openapi["paths"]["/models/{name}/predict/csv"]["post"]
    csv_parameters = {parameter["name"]: parameter for parameter in csv_operation["parameters"]}
    assert csv_parameters["proba"] == parameters["proba"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"rows": [ROW], "proba": True}, "unexpected keys 'proba'"),
        ({"rows": [ROW], "columns": None}, 'send {"rows"'),
        ({"columns": None}, '"columns" must be an object of lists'),
    ],
)
def test_a_body_is_exactly_rows_or_columns(
    iris_client: TestClient, body: dict[str, Any], words: str
) -> None:
    answer = iris_client.post(URL, json=body)
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["error"]["message"]
