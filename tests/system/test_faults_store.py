"""The model store folder moved away under a running server, then moved back.

Loaded models keep serving; anything that needs the folder answers 503 naming it (never
404 for a model that exists, never 500); nothing re-creates an empty store in its place,
not even a worker that gunicorn starts while the folder is away.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing.fastml_api import submit_training
from testing.servers import ADMIN, Server, start_server, stop_server
from tests.system.fault_tools import TRAIN_CSV, children_of, train_and_wait

pytestmark = pytest.mark.system
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
REQUESTS = 20  # on fresh connections, so that every worker answers some
MODEL_POLL_SECONDS = 0.5
WORKER_DEADLINE_SECONDS = 60.0
# What a client may get while the folder is away: the model's answer, or 503 naming the
# folder (or, from a worker started meanwhile, whose login counters are in it, a 503 asking
# to try again).
UNAVAILABLE_MESSAGES = ("missing or unreadable", "logins are unavailable")


def predict_statuses(server: Server) -> list[tuple[int, str]]:
    answers = []
    for _ in range(REQUESTS):
        answer = httpx.post(
            f"{server.url}/models/iris/predict", json={"rows": [ROW]}, auth=ADMIN, timeout=30
        )
        answers.append((answer.status_code, answer.text))
    return answers


def assert_never_404_or_500(server: Server) -> None:
    """While the folder is away: the model's answer, or a 503 that says why."""
    for status, text in predict_statuses(server):
        assert status in (200, 503), text
        if status == 503:
            assert any(message in text for message in UNAVAILABLE_MESSAGES), text


def assert_serves_again(server: Server, version: int) -> None:
    """Once the folder is back: predictions, training (of `version`), jobs and readiness."""
    assert {status for status, _ in predict_statuses(server)} == {200}
    with server.client() as client:
        assert train_and_wait(client, "iris", TRAIN_CSV, "species") == version
        assert client.get("/jobs").status_code == 200
    assert httpx.get(f"{server.url}/health/ready").status_code == 200


@contextlib.contextmanager
def server_with_iris(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server where iris version 1 is trained, and where its store may be moved to; the
    folder is put back and the server stopped whatever the test did."""
    server = start_server(tmp_path)
    moved = tmp_path / "moved-away"
    try:
        with server.client() as client:
            assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 1
        yield server, moved
    finally:
        if moved.exists() and not server.model_dir.exists():
            moved.rename(server.model_dir)
        stop_server(server)


def test_a_store_moved_away_and_back(tmp_path: Path) -> None:
    with server_with_iris(tmp_path) as (server, moved):
        assert {status for status, _ in predict_statuses(server)} == {200}

        server.model_dir.rename(moved)
        time.sleep(MODEL_POLL_SECONDS * 4)  # every worker has polled the missing store

        assert_never_404_or_500(server)
        with server.client() as client:
            answer = submit_training(client, "iris", TRAIN_CSV, "species")
            assert answer.status_code == 503, answer.text
            assert f"model store at {server.model_dir}" in answer.json()["error"]["message"]
            assert client.get("/models").status_code == 503
            assert client.get("/jobs").status_code == 503
        assert httpx.get(f"{server.url}/health/ready").status_code == 503
        assert not server.model_dir.exists()

        moved.rename(server.model_dir)

        assert_serves_again(server, version=2)


def replace_a_worker(server: Server) -> int:
    """kill -9 one worker and wait for gunicorn to boot its replacement; returns the new pid."""
    workers = children_of(server.process.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + WORKER_DEADLINE_SECONDS
    for _ in range(int(WORKER_DEADLINE_SECONDS / 0.1)):
        now = children_of(server.process.pid)
        started = set(now) - set(workers)
        if len(now) == 2 and started:
            return started.pop()
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"no new worker after killing {workers[0]}:\n{server.output_tail()}")


def test_a_worker_started_while_the_store_is_away_creates_nothing_and_serves_once_it_is_back(
    tmp_path: Path,
) -> None:
    with server_with_iris(tmp_path) as (server, moved):
        server.model_dir.rename(moved)

        new_worker = replace_a_worker(server)
        time.sleep(MODEL_POLL_SECONDS * 4)  # the new worker's lifespan has run, and polled

        assert not server.model_dir.exists(), list(server.model_dir.rglob("*"))
        assert server.process.poll() is None, server.output_tail()
        assert_never_404_or_500(server)
        with server.client() as client:
            answer = submit_training(client, "iris", TRAIN_CSV, "species")
        assert answer.status_code == 503, answer.text
        assert httpx.get(f"{server.url}/health/ready").status_code == 503
        assert not server.model_dir.exists(), list(server.model_dir.rglob("*"))

        moved.rename(server.model_dir)

        assert_serves_again(server, version=2)
        assert new_worker in children_of(server.process.pid)  # it served, without a restart
