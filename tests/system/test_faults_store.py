"""The model store folder moved away under a running server, then moved back.

Loaded models keep serving; anything that needs the folder answers 503 naming it (never
404 for a model that exists, never 500); nothing re-creates an empty store in its place.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from testing.fastml_api import submit_training
from testing.servers import ADMIN, Server, start_server, stop_server
from tests.system.fault_tools import TRAIN_CSV, train_and_wait

pytestmark = pytest.mark.system
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
REQUESTS = 20  # on fresh connections, so that every worker answers some
MODEL_POLL_SECONDS = 0.5


def predict_statuses(server: Server) -> list[tuple[int, str]]:
    answers = []
    for _ in range(REQUESTS):
        answer = httpx.post(
            f"{server.url}/models/iris/predict", json={"rows": [ROW]}, auth=ADMIN, timeout=30
        )
        answers.append((answer.status_code, answer.text))
    return answers


def test_a_store_moved_away_and_back(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    moved = tmp_path / "moved-away"
    try:
        with server.client() as client:
            assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 1
            assert {status for status, _ in predict_statuses(server)} == {200}

            server.model_dir.rename(moved)
            time.sleep(MODEL_POLL_SECONDS * 4)  # every worker has polled the missing store

            for status, text in predict_statuses(server):
                assert status in (200, 503), text
                if status == 503:
                    assert "missing or unreadable" in text
            answer = submit_training(client, "iris", TRAIN_CSV, "species")
            assert answer.status_code == 503, answer.text
            assert f"model store at {server.model_dir}" in answer.json()["error"]["message"]
            assert client.get("/models").status_code == 503
            assert client.get("/jobs").status_code == 503
            assert httpx.get(f"{server.url}/health/ready").status_code == 503
            assert not server.model_dir.exists()

            moved.rename(server.model_dir)

            assert {status for status, _ in predict_statuses(server)} == {200}
            assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 2
            assert client.get("/jobs").status_code == 200
            assert httpx.get(f"{server.url}/health/ready").status_code == 200
    finally:
        if moved.exists() and not server.model_dir.exists():
            moved.rename(server.model_dir)
        stop_server(server)
