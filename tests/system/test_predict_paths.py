"""The same predict requests, good and bad, answer alike through every way in: the app in
process (TestClient) and a real gunicorn server with Uvicorn workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from testing.fastml_api import basic_auth
from testing.servers import ADMIN, Server, start_server, stop_server
from tests.users import PREDICTOR, TRAINER

JOB_DEADLINE_SECONDS = 120
MAX_PREDICT_ROWS = 5
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
JSON = {"content-type": "application/json"}

# (name, method, url, body, headers, user, expected status)
CASES: list[tuple[str, str, str, bytes, dict[str, str], tuple[str, str] | None, int]] = [
    ("rows", "POST", "/models/iris/predict", b'{"rows": [%s]}', JSON, ADMIN, 200),
    ("columns", "POST", "/models/iris/predict", b"columns", JSON, ADMIN, 200),
    ("proba", "POST", "/models/iris/predict?proba=true", b'{"rows": [%s]}', JSON, ADMIN, 200),
    ("proba T", "POST", "/models/iris/predict?proba=T", b'{"rows": [%s]}', JSON, ADMIN, 200),
    ("proba 0", "POST", "/models/iris/predict?proba=0", b'{"rows": [%s]}', JSON, ADMIN, 200),
    ("bad proba", "POST", "/models/iris/predict?proba=maybe", b'{"rows": [%s]}', JSON, ADMIN, 422),
    ("media type case", "POST", "/models/iris/predict", b'{"rows": [%s]}',
     {"content-type": "APPLICATION/JSON; charset=utf-8"}, ADMIN, 200),
    ("csv body", "POST", "/models/iris/predict", b"a,b\n1,2\n", {"content-type": "text/csv"},
     ADMIN, 415),
    ("bad JSON", "POST", "/models/iris/predict", b"[", JSON, ADMIN, 422),
    ("neither rows nor columns", "POST", "/models/iris/predict", b"{}", JSON, ADMIN, 422),
    ("missing fields", "POST", "/models/iris/predict", b'{"rows": [{}]}', JSON, ADMIN, 422),
    ("wrong types", "POST", "/models/iris/predict", b'{"rows": [{"sepal_length": "x"}]}', JSON,
     ADMIN, 422),
    ("too many rows", "POST", "/models/iris/predict", b"too many", JSON, ADMIN, 413),
    ("unknown model", "POST", "/models/nope/predict", b'{"rows": [%s]}', JSON, ADMIN, 404),
    ("bad model name", "POST", "/models/Bad/predict", b'{"rows": [%s]}', JSON, ADMIN, 422),
    ("predictor", "POST", "/models/iris/predict", b'{"rows": [%s]}', JSON, PREDICTOR, 200),
    ("trainer", "POST", "/models/iris/predict", b'{"rows": [%s]}', JSON, TRAINER, 200),
    ("wrong password", "POST", "/models/iris/predict", b'{"rows": [%s]}', JSON,
     (ADMIN[0], "wrong"), 401),
    ("no credentials", "POST", "/models/iris/predict", b'{"rows": [%s]}', JSON, None, 401),
    ("wrong role", "GET", "/models/iris/versions/1", b"", {}, PREDICTOR, 403),
    ("wrong method", "GET", "/models/iris/predict", b"", {}, ADMIN, 405),
]  # fmt: skip


def request_body(template: bytes) -> bytes:
    row = httpx.Response(200, json=ROW).content  # the row as compact JSON
    if template == b"columns":
        columns = {key: [value] for key, value in ROW.items()}
        return httpx.Response(200, json={"columns": columns}).content
    if template == b"too many":
        return httpx.Response(200, json={"rows": [ROW] * (MAX_PREDICT_ROWS + 1)}).content
    return template.replace(b"%s", row)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, users_file: Path, iris_train_csv: Path
) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("predict_paths")
    running = start_server(
        tmp_path,
        {"FASTML_USERS_FILE": str(users_file), "FASTML_MAX_PREDICT_ROWS": str(MAX_PREDICT_ROWS)},
    )
    try:
        with running.client() as client, iris_train_csv.open("rb") as file:
            answer = client.post(
                "/models/iris/train",
                files={"csv_file": ("train.csv", file, "text/csv")},
                data={"target_variable": "species"},
            )
            assert answer.status_code == 202, answer.text
            wait_for_job(client, answer.json()["id"])
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def in_process(server: Server, users_file: Path) -> Iterator[TestClient]:
    """The same app in this process, on the server's model store (and so its secret key)."""
    settings = Settings(
        model_dir=server.model_dir,
        log_path=server.log_path.with_name("in_process.log"),
        service_user=ADMIN[0],
        service_pass=ADMIN[1],
        users_file=users_file,
        max_predict_rows=MAX_PREDICT_ROWS,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def wait_for_job(client: httpx.Client, job_id: str) -> None:
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    for _ in range(10_000):
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] == "succeeded":
            return
        assert job["status"] in ("queued", "running"), job
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {JOB_DEADLINE_SECONDS} s")


def whole_answer(answer: httpx.Response) -> tuple[int, str, Any]:
    body = answer.json()
    if isinstance(body, dict):
        body.pop("request_id", None)  # differs by design
    return answer.status_code, answer.headers["content-type"], body


@pytest.mark.parametrize(
    ("method", "url", "template", "headers", "user", "status"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_every_way_in_answers_alike(
    server: Server,
    in_process: TestClient,
    method: str,
    url: str,
    template: bytes,
    headers: dict[str, str],
    user: tuple[str, str] | None,
    status: int,
) -> None:
    all_headers = {**headers, **(basic_auth(user) if user else {})}
    body = request_body(template)
    over_http = httpx.request(method, server.url + url, content=body, headers=all_headers)
    in_app = in_process.request(method, url, content=body, headers=all_headers)

    assert whole_answer(over_http) == whole_answer(in_app)
    assert over_http.status_code == status, over_http.text
