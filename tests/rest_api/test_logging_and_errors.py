"""One JSON error shape; one log line per request, never with a password or a CSV cell."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from testing.fastml_api import basic_auth
from testing.servers import ADMIN
from tests.users import PREDICTOR


def test_error_shape_is_stable(client: TestClient) -> None:
    for answer in [
        client.get("/no/such/route"),
        client.get("/jobs/xyz"),
        client.post(
            "/models/iris/predict", content=b"{}", headers={"content-type": "application/json"}
        ),
        client.put("/models/iris/current", json={"version": "one"}),
    ]:
        body = answer.json()
        assert set(body) == {"error", "request_id"}
        assert set(body["error"]) == {"status", "code", "message", "details"}
        assert body["error"]["status"] == answer.status_code
        assert body["request_id"] == answer.headers["x-request-id"]


def test_request_lines_and_no_secrets_in_log(
    client: TestClient, iris_model: dict[str, Any], settings: Settings
) -> None:
    secret_cell = "SECRET-CELL-7f3a"
    client.post(
        "/models/iris/predict/csv",
        files={
            "csv_file": (
                "x.csv",
                io.BytesIO(
                    f"sepal_length,sepal_width,petal_length,petal_width,note\n1,2,3,4,{secret_cell}\n".encode()
                ),
            )
        },
    )
    client.get("/models", headers={**basic_auth(PREDICTOR), "X-Request-ID": "trace-123"})
    log = read_log_when(settings.log_path, "request_id=trace-123")
    assert "GET /models 403" in log
    assert "user=pete request_id=trace-123" in log
    assert "POST /models/iris/predict/csv 200" in log
    assert "ms user=admin" in log
    assert "job " in log  # job events land in the same log
    for secret in (ADMIN[1], PREDICTOR[1], secret_cell):
        assert secret not in log


def read_log_when(log_path: Path, text: str) -> str:
    """The log once `text` is in it: request lines are written in batches every 0.2 s."""
    deadline = time.monotonic() + 5
    for _ in range(200):
        log = log_path.read_text()
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)
    return log_path.read_text()


def test_newlines_in_paths_cannot_forge_log_lines(client: TestClient, settings: Settings) -> None:
    client.get("/models/x%0A2026-01-01 00:00:00,000 1 INFO fastml.requests GET /forged 200")
    log = read_log_when(settings.log_path, "/models/x")
    assert "\nINFO" not in log
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())


def test_metrics_count_requests(client: TestClient) -> None:
    client.get("/health/live")
    text = client.get("/metrics").text
    assert 'fastml_http_requests_total{method="GET",route="/health/live",status="200"}' in text


def test_an_internal_error_is_a_json_500_with_the_request_id(settings: Settings) -> None:
    app = create_app(settings)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)  # a route with a bug, added by this test only
    with TestClient(app, headers=basic_auth(ADMIN), raise_server_exceptions=False) as client:
        answer = client.get("/broken")
    assert answer.status_code == 500
    body = answer.json()
    assert body["error"]["code"] == "internal_error"
    assert "a bug" not in answer.text
    assert body["request_id"] == answer.headers["x-request-id"]
    log = settings.log_path.read_text()
    assert "GET /broken 500" in log and body["request_id"] in log
