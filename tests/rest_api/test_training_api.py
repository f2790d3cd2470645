"""Training over HTTP: 202 + Location, job lifecycle, validation before queueing.

Every test runs twice: on the embedded default and on the Celery mode (real worker, Redis).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from testing.fastml_api import train, wait_for_job
from tests.rest_api.slow_training import submit_slow_training


@pytest.fixture
def settings(any_mode_settings: Settings) -> Settings:
    return any_mode_settings


def test_train_answers_202_with_location_and_job(client: TestClient, iris_train_csv: Path) -> None:
    with iris_train_csv.open("rb") as file:
        answer = client.post(
            "/models/iris/train",
            files={"csv_file": ("train.csv", file, "text/csv")},
            data={"target_variable": "species", "estimator": "logistic_regression"},
        )
    assert answer.status_code == 202
    job = answer.json()
    assert answer.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] in ("queued", "running", "succeeded")
    finished = wait_for_job(client, job["id"])
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["version"] == 1
    metrics = finished["result"]["metrics"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "confusion_matrix"):
        assert key in metrics
    assert metrics["accuracy"] > 0.8
    assert finished["started_at"] and finished["finished_at"]


def test_every_registered_estimator_trains(client: TestClient, iris_train_csv: Path) -> None:
    estimators = client.get("/openapi.json").json()  # the form documents the registry
    assert "hist_gradient_boosting" in str(estimators)
    for index, estimator in enumerate(
        [
            "random_forest",
            "logistic_regression",
            "svc",
            "gradient_boosting",
            "hist_gradient_boosting",
            "knn",
            "extra_trees",
        ]
    ):
        job = train(client, f"m{index}", iris_train_csv, estimator=estimator)
        assert job["status"] == "succeeded", (estimator, job)
    newest_first = [job["model_name"] for job in client.get("/jobs").json()["jobs"]]
    assert newest_first == [f"m{index}" for index in range(6, -1, -1)]
    latest = client.get("/jobs", params={"limit": 2}).json()["jobs"]
    assert [job["model_name"] for job in latest] == ["m6", "m5"]


def test_cv_and_params_are_recorded(client: TestClient, iris_train_csv: Path) -> None:
    job = train(client, "cv", iris_train_csv, cv="3", params='{"n_estimators": 7}')
    assert job["status"] == "succeeded", job
    version = client.get("/models/cv/versions/1").json()
    assert version["metadata"]["metrics"]["evaluation"] == "cv"
    assert version["metadata"]["params"]["n_estimators"] == 7
    assert version["metadata"]["dataset_rows"] == 105
    assert version["metadata"]["metrics"]["train_rows"] == 105  # refitted on every row


def test_bad_training_requests_get_422_before_queueing(
    client: TestClient, iris_train_csv: Path
) -> None:
    cases = [
        ("Bad Name", {"target_variable": "species"}, "model name"),
        ("iris", {"target_variable": "species", "estimator": "deep_net"}, "unknown estimator"),
        ("iris", {"target_variable": "species", "params": "{not json"}, "params is not valid JSON"),
        ("iris", {"target_variable": "species", "params": "[1]"}, "JSON object"),
        ("iris", {"target_variable": "species", "params": '{"n_trees": 3}'}, "n_trees"),
        ("iris", {"target_variable": "species", "params": '{"n_estimators": -1}'}, "n_estimators"),
        ("iris", {"target_variable": "species", "test_size": "1.5"}, "test_size"),
        ("iris", {"target_variable": "species", "cv": "3", "test_size": "0.2"}, "cv"),
        ("iris", {}, "target_variable"),
    ]
    for name, form, fragment in cases:
        with iris_train_csv.open("rb") as file:
            answer = client.post(
                f"/models/{name}/train", files={"csv_file": ("t.csv", file)}, data=form
            )
        assert answer.status_code == 422, (form, answer.text)
        assert fragment in answer.json()["error"]["message"], (form, answer.text)
    assert client.get("/jobs").json()["jobs"] == []


def test_bad_csv_fails_the_job_with_a_clear_message(client: TestClient) -> None:
    cases = {
        b"": "empty",
        b"a,b,species\n1,2,x\n1,2\n": "line",
        b"a,a,species\n1,2,x\n": "repeats column names",
        b"\x00\x01\x02binary": "binary",
        b"a,b,species\n1,2,x\n3,4,x\n": "single class",
    }
    for content, fragment in cases.items():
        answer = client.post(
            "/models/bad/train",
            files={"csv_file": ("bad.csv", io.BytesIO(content))},
            data={"target_variable": "species"},
        )
        if answer.status_code == 422:  # refused up front: just as good
            assert fragment in answer.json()["error"]["message"].lower(), answer.text
            continue
        assert answer.status_code == 202, answer.text
        job = wait_for_job(client, answer.json()["id"])
        assert job["status"] == "failed"
        assert fragment in job["error"].lower(), (content, job["error"])
    assert client.get("/models/bad").status_code == 404


def test_jobs_list_unknown_and_cancel(client: TestClient, iris_train_csv: Path) -> None:
    job = train(client, "iris", iris_train_csv)
    listed = client.get("/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/jobs", params={"model": "other"}).json()["jobs"] == []
    assert client.get("/jobs/00000000-0000-4000-8000-000000000000").status_code == 404
    assert client.get("/jobs/not-a-uuid").status_code == 404
    finished = client.delete(f"/jobs/{job['id']}")
    assert finished.status_code == 409
    assert "queued" in finished.json()["error"]["message"]


def test_promote_false_keeps_current(client: TestClient, iris_train_csv: Path) -> None:
    train(client, "iris", iris_train_csv)
    job = train(client, "iris", iris_train_csv, promote="false")
    assert job["result"]["version"] == 2
    assert client.get("/models/iris").json()["current_version"] == 1


def test_header_mistakes_are_refused_before_a_job_is_queued(client: TestClient) -> None:
    cases = {
        b"a,b,label\n1,2,x\n": "column 'species' not found; the csv has: a, b, label",
        b"species,species\nx,y\n": "repeats column names",
        b"a,species\n": "no data rows",
        b"\xff\xfe\x00a\x00,": "utf-16",
    }
    for content, fragment in cases.items():
        answer = client.post(
            "/models/early/train",
            files={"csv_file": ("x.csv", io.BytesIO(content))},
            data={"target_variable": "species"},
        )
        assert answer.status_code == 422, answer.text
        assert fragment in answer.json()["error"]["message"].lower(), answer.text
    assert client.get("/jobs").json()["jobs"] == []


def test_a_queued_job_can_be_cancelled(client: TestClient, tmp_path: Path) -> None:
    """One training process: a slow job runs, the next waits queued and can be cancelled;
    the running one cannot."""
    ids = [submit_slow_training(client, tmp_path, trees) for trees in (400, 5)]
    cancelled = client.delete(f"/jobs/{ids[1]}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert wait_for_job(client, ids[0], frozenset({"running"}))["status"] == "running"
    running = client.delete(f"/jobs/{ids[0]}")  # not interrupted: it finishes
    assert running.status_code == 409, running.text
    assert running.json()["error"]["message"] == (
        "job is running; only queued jobs can be cancelled"
    )
    assert wait_for_job(client, ids[0])["status"] == "succeeded"
    assert client.get(f"/jobs/{ids[1]}").json()["status"] == "cancelled"
    assert client.get("/models/slow").json()["current_version"] == 1
