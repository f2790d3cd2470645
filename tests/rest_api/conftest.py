"""An app with its lifespan running, and an iris model trained through the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from tests.conftest import ADMIN, basic_auth

JOB_DEADLINE_SECONDS = 120


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=basic_auth(ADMIN)) as test_client:
        yield test_client


def wait_for_job(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    for _ in range(10_000):
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {JOB_DEADLINE_SECONDS} s")


def train(
    client: TestClient, name: str, csv_path: Path, target: str = "species", **form: str
) -> dict[str, Any]:
    with csv_path.open("rb") as file:
        answer = client.post(
            f"/models/{name}/train",
            files={"csv_file": (csv_path.name, file, "text/csv")},
            data={"target_variable": target, **form},
        )
    assert answer.status_code == 202, answer.text
    return wait_for_job(client, answer.json()["id"])


@pytest.fixture
def iris_model(client: TestClient, iris_train_csv: Path) -> dict[str, Any]:
    job = train(
        client, "iris", iris_train_csv, estimator="random_forest", params='{"n_estimators": 20}'
    )
    assert job["status"] == "succeeded", job
    return job
