"""A forker's CORSMiddleware, added the usual way after create_app, sits outside auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.middleware.cors import CORSMiddleware
from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from testing.fastml_api import basic_auth, train
from testing.servers import ADMIN

ORIGIN = "https://dashboard.example"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def cors_client(settings: Settings, iris_train_csv: Path) -> Iterator[TestClient]:
    app = create_app(settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[ORIGIN],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
    with TestClient(app, headers=basic_auth(ADMIN)) as client:
        assert train(client, "iris", iris_train_csv)["status"] == "succeeded"
        yield client


def test_preflight_is_answered_without_credentials(cors_client: TestClient) -> None:
    answer = cors_client.options(
        "/models/iris/predict",
        headers={
            "Authorization": "",  # a browser's preflight carries no credentials
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()


def test_predict_and_auth_failures_carry_cors_headers(cors_client: TestClient) -> None:
    answer = cors_client.post(
        "/models/iris/predict",
        json={"rows": [ROW]},
        headers={"Origin": ORIGIN},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == ["setosa"]
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["x-request-id"]

    wrong_password = {"Origin": ORIGIN, **basic_auth((ADMIN[0], "wrong"))}
    refused = cors_client.post("/models/iris/predict", json={"rows": [ROW]}, headers=wrong_password)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_other_origins_get_no_cors_headers(cors_client: TestClient) -> None:
    answer = cors_client.post(
        "/models/iris/predict",
        json={"rows": [ROW]},
        headers={"Origin": "https://elsewhere.example"},
    )
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
