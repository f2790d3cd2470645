"""The README's tour against real gunicorn with two Uvicorn workers, over real HTTP."""

from __future__ import annotations

import csv
import io
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.conftest import Server

pytestmark = pytest.mark.system
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
DEADLINE_SECONDS = 90


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    for _ in range(5000):
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running")


def train(client: httpx.Client, csv_path: Path, **form: str) -> dict[str, Any]:
    with csv_path.open("rb") as file:
        answer = client.post(
            "/models/iris/train",
            files={"csv_file": ("train.csv", file, "text/csv")},
            data={"target_variable": "species", **form},
        )
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"].startswith("/jobs/")
    return wait_for_job(client, answer.json()["id"])


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
        job = train(client, iris_train_csv)
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
        second = train(client, iris_train_csv, estimator="logistic_regression")
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
