"""Batch-prediction jobs over HTTP: submit, progress, the result file, roles, deletion and
expiry.

Every test runs twice: on the embedded default and on the Celery mode (real worker, Redis).
"""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from ML.prediction_jobs import remove_expired_results, result_path
from rest_api.app import create_app
from testing.fastml_api import basic_auth, predict_as_job, submit_prediction_job, wait_for_job
from testing.servers import ADMIN
from tests.iris import TrainedIris
from tests.rest_api.slow_training import submit_slow_training
from tests.users import PREDICTOR, TRAINER

HEADER = "sepal_length,sepal_width,petal_length,petal_width,note\n"
ESCAPED = (
    HEADER + '5.1,3.5,1.4,0.2,=HYPERLINK("x")\n'
    "7.7,3.0,6.1,2.3,+cmd\n"
    "-6.0,2.9,4.5,1.5,@sum\n"
    '6.0,2.9,4.5,1.5,"quoted, with comma"\n'
    "6.1,2.8,4.7,1.2,-1.5\n"
).encode()


@pytest.fixture
def settings(any_mode_settings: Settings) -> Settings:
    return any_mode_settings


def predict_csv(client: TestClient, data: bytes, *, proba: bool) -> bytes:
    answer = client.post(
        f"/models/iris/predict/csv{'?proba=true' if proba else ''}",
        files={"csv_file": ("in.csv", io.BytesIO(data), "text/csv")},
    )
    assert answer.status_code == 200, answer.text
    return answer.content


@pytest.mark.parametrize("proba", [False, True])
def test_the_result_is_what_predict_csv_answers(
    client: TestClient, iris_model: dict[str, Any], iris_test_csv: Path, proba: bool
) -> None:
    data = ESCAPED if proba else iris_test_csv.read_bytes()
    answer = submit_prediction_job(client, "iris", data, proba=proba)
    assert answer.status_code == 202, answer.text
    view = answer.json()
    assert answer.headers["location"] == f"/jobs/{view['id']}"
    assert (view["kind"], view["options"]["version"], view["options"]["proba"]) == (
        "predict",
        1,
        proba,
    )
    job = wait_for_job(client, view["id"])
    assert job["status"] == "succeeded", job
    rows = data.count(b"\n") - 1
    assert job["rows_done"] == rows
    assert (job["result"]["version"], job["result"]["rows"]) == (1, rows)
    assert job["links"]["result"] == f"/jobs/{view['id']}/result"
    result = client.get(job["links"]["result"])
    assert result.status_code == 200, result.text
    assert result.headers["content-type"].startswith("text/csv")
    assert result.content == predict_csv(client, data, proba=proba)
    if proba:  # the cells a spreadsheet would run are escaped, plain numbers are not
        lines = result.text.splitlines()
        assert lines[0].startswith(HEADER.strip() + ",prediction,probability_setosa")
        assert ',"\'=HYPERLINK(""x"")",setosa,' in lines[1]
        assert ",'+cmd," in lines[2] and ",'@sum," in lines[3]
        assert lines[3].startswith("-6.0,")
        assert ",-1.5,versicolor," in lines[5]


def test_the_result_file_is_private_and_deleted_on_request(
    client: TestClient, iris_model: dict[str, Any], settings: Settings
) -> None:
    job = predict_as_job(client, "iris", ESCAPED)
    path = result_path(settings.results_dir, job["id"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.results_dir.stat().st_mode) == 0o700
    assert list(settings.uploads_dir.iterdir()) == []  # the upload went with the job
    deleted = client.delete(f"/jobs/{job['id']}")
    assert deleted.status_code == 200, deleted.text
    assert not path.exists()
    gone = client.get(f"/jobs/{job['id']}/result")
    assert gone.status_code == 404
    assert "was deleted" in gone.json()["error"]["message"]
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"


def test_expired_results_are_removed(
    client: TestClient, iris_model: dict[str, Any], settings: Settings
) -> None:
    job = predict_as_job(client, "iris", ESCAPED)
    path = result_path(settings.results_dir, job["id"])
    jobs = client.app.state.backend.jobs  # type: ignore[attr-defined]
    assert remove_expired_results(settings.results_dir, jobs, 3600) == 0
    stray = settings.results_dir / f".{job['id']}.csv.abc123.tmp"  # left by a killed process
    stray.write_bytes(b"half")
    day_ago = time.time() - 86_400
    for old in (path, stray):
        os.utime(old, (day_ago, day_ago))
    assert remove_expired_results(settings.results_dir, jobs, 3600) == 2
    assert list(settings.results_dir.iterdir()) == []
    assert client.get(f"/jobs/{job['id']}/result").status_code == 404


def test_an_expiry_sweep_runs_in_the_server(
    settings: Settings, trained_iris: TrainedIris, tmp_path: Path
) -> None:
    trained_iris.copy_to(settings.model_dir)
    short = settings.model_copy(update={"prediction_result_hours": 1 / 3600})  # one second
    with TestClient(create_app(short), headers=basic_auth(ADMIN)) as client:
        job = predict_as_job(client, "iris", ESCAPED)
        path = result_path(short.results_dir, job["id"])
        deadline = time.monotonic() + 20
        for _ in range(200):
            if not path.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not path.exists()
        assert client.get(f"/jobs/{job['id']}/result").status_code == 404


def test_submit_refuses_what_it_can_check(client: TestClient, iris_model: dict[str, Any]) -> None:
    cases: list[tuple[str, bytes, int, str]] = [
        ("nosuchmodel", ESCAPED, 404, "not found"),
        ("Bad Name", ESCAPED, 422, "name"),
        ("iris", b"", 422, "empty"),
        ("iris", b"sepal_length,sepal_width\n1,2\n", 422, "petal_length"),
        (
            "iris",
            b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,x\n",
            422,
            "petal_width",
        ),
        ("iris", HEADER.replace("note", "prediction").encode() + b"1,2,3,4,x\n", 422, "prediction"),
        ("iris", b"\x00\x01\x02binary", 422, "binary"),
    ]
    for name, data, status, fragment in cases:
        answer = submit_prediction_job(client, name, data)
        assert answer.status_code == status, (name, data, answer.text)
        assert fragment in answer.json()["error"]["message"].lower(), answer.text
    assert [job["kind"] for job in client.get("/jobs").json()["jobs"]] == ["train"]  # iris's
    assert list(client.app.state.backend.settings.uploads_dir.iterdir()) == []  # type: ignore[attr-defined]


def test_a_bad_row_past_the_first_ones_fails_the_job(
    client: TestClient, iris_model: dict[str, Any], settings: Settings
) -> None:
    good = b"5.1,3.5,1.4,0.2,x\n" * 500
    answer = submit_prediction_job(client, "iris", HEADER.encode() + good + b"1,2,3,oops,x\n")
    assert answer.status_code == 202, answer.text
    job = wait_for_job(client, answer.json()["id"])
    assert job["status"] == "failed"
    assert "petal_width" in job["error"] and "501" in job["error"], job["error"]
    refused = client.get(f"/jobs/{job['id']}/result")
    assert refused.status_code == 409
    assert "failed" in refused.json()["error"]["message"]
    assert list(settings.results_dir.iterdir()) == []  # no partial file left


def test_predictors_run_and_read_only_their_own_jobs(
    client: TestClient, iris_model: dict[str, Any], iris_train_csv: Path
) -> None:
    pete, tina = basic_auth(PREDICTOR), basic_auth(TRAINER)
    client.headers.update(pete)
    job = predict_as_job(client, "iris", ESCAPED, proba=True)
    assert job["status"] == "succeeded"
    assert job["options"]["submitted_by"] == PREDICTOR[0]
    assert client.get(f"/jobs/{job['id']}/result").status_code == 200
    training = client.app.state.backend.jobs.list_recent(10, model_name="iris")[-1]  # type: ignore[attr-defined]
    for url in (f"/jobs/{training.id}", f"/jobs/{training.id}/result", "/jobs"):
        assert client.get(url).status_code == 403, url
    others = predict_as_job(client.__class__(client.app, headers=tina), "iris", ESCAPED)
    refused = client.get(f"/jobs/{others['id']}/result")
    assert refused.status_code == 403
    assert "only the batch-prediction jobs it submitted" in refused.json()["error"]["message"]
    assert client.delete(f"/jobs/{others['id']}").status_code == 403
    client.headers.update(tina)
    assert client.get(f"/jobs/{job['id']}/result").status_code == 200  # trainers see all
    assert client.get(f"/jobs/{training.id}/result").status_code == 404  # a training job


def test_a_result_is_not_readable_before_the_job_is_done(
    client: TestClient, iris_model: dict[str, Any], iris_train_csv: Path, tmp_path: Path
) -> None:
    """One job process: a slow training job runs, the prediction job waits queued behind it."""
    submit_slow_training(client, tmp_path, 300)
    client.headers.update(basic_auth(PREDICTOR))
    answer = submit_prediction_job(client, "iris", ESCAPED)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    early = client.get(f"/jobs/{job_id}/result")
    assert early.status_code == 404
    assert "not ready" in early.json()["error"]["message"], early.text
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    assert client.get(f"/jobs/{job_id}/result").status_code == 200


def test_unknown_jobs_have_no_result(client: TestClient) -> None:
    for job_id in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        answer = client.get(f"/jobs/{job_id}/result")
        assert answer.status_code == 404
        assert "not found" in answer.json()["error"]["message"]


def test_deleting_a_model_keeps_its_jobs_and_fails_its_queued_ones(
    client: TestClient, iris_model: dict[str, Any], tmp_path: Path
) -> None:
    """One job process: a prediction job waits queued behind a slow training job while its
    model is deleted; it fails saying so, and the jobs that ran before keep their results."""
    done = predict_as_job(client, "iris", ESCAPED)
    slow_id = submit_slow_training(client, tmp_path, 150)
    queued = submit_prediction_job(client, "iris", ESCAPED)
    assert queued.status_code == 202, queued.text
    assert client.delete("/models/iris").status_code == 204
    assert client.get(f"/jobs/{queued.json()['id']}").json()["status"] == "queued"
    failed = wait_for_job(client, queued.json()["id"])
    assert failed["status"] == "failed", failed
    assert "iris" in failed["error"] and "not found" in failed["error"], failed["error"]
    assert wait_for_job(client, slow_id)["status"] == "succeeded"
    listed = [job["id"] for job in client.get("/jobs", params={"model": "iris"}).json()["jobs"]]
    assert {done["id"], iris_model["id"], failed["id"]} <= set(listed)
    assert client.get(f"/jobs/{done['id']}").json()["status"] == "succeeded"
    assert client.get(f"/jobs/{done['id']}/result").status_code == 200
