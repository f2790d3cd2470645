"""The lean predict endpoint and the documented FastAPI route answer exactly alike."""

from __future__ import annotations

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
CASES: list[tuple[str, dict[str, Any]]] = [
    ("/models/iris/predict", {"json": {"rows": [ROW]}}),
    ("/models/iris/predict?proba=true", {"json": {"rows": [ROW, ROW]}}),
    ("/models/iris/predict?proba=maybe", {"json": {"rows": [ROW]}}),
    ("/models/iris/predict", {"json": {"columns": {k: [v] for k, v in ROW.items()}}}),
    ("/models/iris/predict", {"json": {"rows": [{"sepal_length": "x"}]}}),
    ("/models/iris/predict", {"content": b"[", "headers": {"content-type": "application/json"}}),
    ("/models/iris/predict", {"content": b"a,b", "headers": {"content-type": "text/csv"}}),
    ("/models/nope/predict", {"json": {"rows": [ROW]}}),
    ("/models/Bad/predict", {"json": {"rows": [ROW]}}),
]


@pytest.fixture(params=[True, False], ids=["lean", "fastapi"])
def any_client(
    request: pytest.FixtureRequest, settings: Settings, iris_train_csv: Path
) -> Iterator[TestClient]:
    """The same app with JSON predictions answered at the edge, or by the FastAPI route."""
    configured = settings.model_copy(update={"lean_predict": request.param})
    with TestClient(create_app(configured), headers=basic_auth(ADMIN)) as client:
        assert train(client, "iris", iris_train_csv)["status"] == "succeeded"
        yield client


def strip_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "request_id"}


def test_both_paths_answer_alike(any_client: TestClient) -> None:
    answers = []
    for url, kwargs in CASES:
        answer = any_client.post(url, **kwargs)
        answers.append((answer.status_code, strip_ids(answer.json())))
    statuses = [status for status, _ in answers]
    assert statuses == [200, 200, 422, 200, 422, 422, 415, 404, 422]
    assert answers[0][1] == {"model": "iris", "version": 1, "predictions": ["setosa"]}
    assert answers[2][1]["error"]["code"] in ("invalid_request", "invalid_input")
    # Roles and auth hold on both paths.
    url, kwargs = CASES[0]
    for headers, status in [
        (basic_auth(PREDICTOR), 200),
        (basic_auth(TRAINER), 200),
        ({"Authorization": "Basic eDp5"}, 401),
    ]:
        assert any_client.post(url, headers=headers, **kwargs).status_code == status
