"""The README's tour against real gunicorn with two Uvicorn workers, over real HTTP."""

from __future__ import annotations

import csv
import io
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from testing.fastml_api import submit_training, train, wait_for_job
from testing.servers import Server
from tests.iris import ROW

pytestmark = pytest.mark.system
DEADLINE_SECONDS = 90


def answers_by_worker(server: Server, method: str, path: str, **kwargs: Any) -> dict[int, Any]:
    """Ask on fresh connections until both workers have answered; {pid: json}."""
    seen: dict[int, Any] = {}
    deadline = time.monotonic() + DEADLINE_SECONDS
    for _ in range(400):
        request_id = uuid.uuid4().hex
        with server.client() as client:  # a new connection each time
            answer = client.request(method, path, headers={"X-Request-ID": request_id}, **kwargs)
        assert answer.status_code == 200, answer.text
        pid = server.worker_pid_of(request_id)
        if pid is not None:
            seen[pid] = answer.json()
        if len(seen) >= 2 or time.monotonic() > deadline:
            break
    assert len(seen) == 2, f"only workers {list(seen)} answered"
    return seen


def test_tour(server: Server, iris_train_csv: Path, iris_test_csv: Path) -> None:
    with server.client() as client:
        submitted = submit_training(client, "iris", iris_train_csv)
        assert submitted.status_code == 202, submitted.text
        assert submitted.headers["location"] == f"/jobs/{submitted.json()['id']}"
        job = wait_for_job(client, submitted.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["version"] == 1

        # Every worker answers the same job record (SQLite is shared).
        by_worker = answers_by_worker(server, "GET", f"/jobs/{job['id']}")
        assert {answer["status"] for answer in by_worker.values()} == {"succeeded"}

        predicted = client.post("/models/iris/predict?proba=true", json={"rows": [ROW]})
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["predictions"] == ["setosa"]

        with iris_test_csv.open("rb") as file:
            evaluated = client.post(
                "/models/iris/evaluate",
                files={"csv_file": ("test.csv", file)},
                data={"target_variable": "species"},
            )
        assert evaluated.status_code == 200 and evaluated.json()["metrics"]["accuracy"] > 0.85

        with iris_test_csv.open("rb") as file:
            as_csv = client.post("/models/iris/predict/csv", files={"csv_file": ("test.csv", file)})
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert len(rows) == 45 and all(row["prediction"] for row in rows)
        assert all(row["species"] for row in rows)  # the label column passes through

        # A new version reaches every worker without a restart.
        second = train(client, "iris", iris_train_csv, estimator="logistic_regression")
        assert second["result"]["version"] == 2
        deadline = time.monotonic() + DEADLINE_SECONDS
        for _ in range(100):
            versions = {
                answer["version"]
                for answer in answers_by_worker(
                    server, "POST", "/models/iris/predict", json={"rows": [ROW]}
                ).values()
            }
            if versions == {2} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert versions == {2}

        metrics = client.get("/metrics").text
        assert "fastml_http_requests_total" in metrics
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()

    log = server.log_path.read_text()
    assert "POST /models/iris/train 202" in log
    assert len({line.split()[2] for line in log.splitlines() if "GET /jobs/" in line}) == 2
