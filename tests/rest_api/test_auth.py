"""Basic auth, roles, throttling, the generated admin and early refusal of uploads.

The tests on the `settings` fixture run twice: on the embedded default (login counters in
SQLite) and on the Celery mode (counters in Redis, a real worker).
"""

from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from testing.fastml_api import basic_auth
from testing.servers import ADMIN
from tests.users import PREDICTOR, TRAINER

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def settings(any_mode_settings: Settings) -> Settings:
    return any_mode_settings


def test_public_routes_need_no_credentials(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/").json()["name"] == "fastml"
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").json()["status"] == "ready"
        for path in ["/models", "/jobs", "/metrics", "/docs", "/openapi.json"]:
            answer = client.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Basic")
            assert answer.json()["error"]["code"] == "unauthorized"


def test_roles(client: TestClient, iris_model: dict[str, Any], iris_train_csv: Path) -> None:
    predictor, trainer = basic_auth(PREDICTOR), basic_auth(TRAINER)
    assert (
        client.post("/models/iris/predict", json={"rows": [ROW]}, headers=predictor).status_code
        == 200
    )
    assert client.get("/models", headers=predictor).status_code == 403
    with iris_train_csv.open("rb") as file:
        refused = client.post(
            "/models/iris/train",
            files={"csv_file": ("t.csv", file)},
            data={"target_variable": "species"},
            headers=predictor,
        )
    assert refused.status_code == 403
    assert "predictor" in refused.json()["error"]["message"]
    assert client.get("/models", headers=trainer).status_code == 200
    assert (
        client.post("/models/iris/predict", json={"rows": [ROW]}, headers=trainer).status_code
        == 200
    )


def test_wrong_password_then_throttled(client: TestClient) -> None:
    wrong = basic_auth((TRAINER[0], "nope"))
    for _ in range(3):
        assert client.get("/models", headers=wrong).status_code == 401
    throttled = client.get("/models", headers=wrong)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    # Even the right password waits out the window from that client...
    assert client.get("/models", headers=basic_auth(TRAINER)).status_code == 429
    # ...while other users are not affected.
    assert client.get("/models").status_code == 200


def test_malformed_credentials_are_401(client: TestClient) -> None:
    for header in ["Bearer abc", "Basic !!!", "Basic " + "YWJj"]:  # last: no colon
        answer = client.get("/models", headers={"Authorization": header})
        assert answer.status_code == 401, header


def test_unauthenticated_upload_is_refused_before_reading(client: TestClient) -> None:
    answer = client.post(
        "/models/iris/train",
        files={"csv_file": ("big.csv", io.BytesIO(b"x" * 1_000_000))},
        data={"target_variable": "y"},
        headers={"Authorization": ""},
    )
    assert answer.status_code == 401
    assert answer.headers["connection"] == "close"


def test_oversized_upload_is_413(settings: Settings) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(small), headers=basic_auth(ADMIN)) as client:
        answer = client.post(
            "/models/iris/train",
            files={"csv_file": ("big.csv", io.BytesIO(b"a,b\n" * 1000))},
            data={"target_variable": "b"},
        )
    assert answer.status_code == 413
    assert "limit" in answer.json()["error"]["message"]


def test_generated_admin_when_no_user_is_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(model_dir=tmp_path / "models", log_path=tmp_path / "ML_server.log")
    with TestClient(create_app(settings)) as client:
        credentials = settings.resolved_state_dir / "admin_credentials.txt"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        name, _, password = credentials.read_text().strip().partition(":")
        printed = capsys.readouterr().err
        assert str(credentials) in printed and password not in printed
        assert client.get("/models", headers=basic_auth((name, password))).status_code == 200
        assert client.get("/models", headers=basic_auth(("admin", "admin"))).status_code == 401
    # A second start reuses the same password and prints nothing new.
    create_app(settings)
    assert credentials.read_text().strip().partition(":")[2] == password
    assert password not in (tmp_path / "ML_server.log").read_text()


def test_a_role_that_may_not_upload_is_refused_before_reading(client: TestClient) -> None:
    answer = client.post(
        "/models/iris/train",
        files={"csv_file": ("big.csv", io.BytesIO(b"x" * 1_000_000))},
        data={"target_variable": "y"},
        headers=basic_auth(PREDICTOR),
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == (
        "user 'pete' has role predictor; this needs trainer"
    )
    assert answer.headers["connection"] == "close"  # answered by the edge, body unread
    # Routes a predictor may call, and unknown routes, are not refused at the edge.
    assert client.get("/metrics", headers=basic_auth(PREDICTOR)).status_code == 200
    assert client.get("/no/such/route", headers=basic_auth(PREDICTOR)).status_code == 404


def test_only_an_admin_may_delete_models_and_versions(
    client: TestClient, iris_model: dict[str, Any]
) -> None:
    trainer = basic_auth(TRAINER)
    for path in ["/models/iris/versions/1", "/models/iris"]:
        refused = client.delete(path, headers=trainer)
        assert refused.status_code == 403, path
        assert refused.json()["error"]["message"] == (
            "user 'tina' has role trainer; this needs admin"
        )
        assert refused.headers["connection"] == "close"  # refused at the edge
    assert client.get("/models/iris", headers=trainer).json()["current_version"] == 1
    # The trainer may still promote; the admin (the client's own user) may delete.
    assert (
        client.put("/models/iris/current", json={"version": 1}, headers=trainer).status_code == 200
    )
    assert client.delete("/models/iris").status_code == 204
