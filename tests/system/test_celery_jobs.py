"""The distributed mode as real processes: gunicorn with FASTML_BROKER_URL, real
`celery --app ML.tasks worker` processes and a private append-only redis-server."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testing.celery_workers import CeleryWorker
from testing.fastml_api import submit_training, train, wait_for_job
from testing.servers import Server, start_server, stop_server
from tests.celery_workers import job_process, running_worker
from tests.redis_fixture import RedisServer
from tests.system.fault_tools import TRAIN_CSV, is_alive, wait_until_gone

pytestmark = pytest.mark.system

RECOVERY_DEADLINE_SECONDS = 30.0


@dataclass
class Stack:
    server: Server
    redis: RedisServer
    work_dir: Path
    env: dict[str, str]


@pytest.fixture
def stack(tmp_path: Path, private_redis: RedisServer) -> Iterator[Stack]:
    """One gunicorn (2 workers) in Celery mode on the test's own Redis; workers are started
    by each test, on the same model folder (a shared volume stands for it here)."""
    env = {"FASTML_BROKER_URL": private_redis.url, "FASTML_JOB_MAX_ATTEMPTS": "2"}
    server = start_server(tmp_path, env)
    try:
        yield Stack(server, private_redis, tmp_path, env)
    finally:
        stop_server(server)


def slow_csv(tmp_path: Path) -> Path:
    """A CSV whose training takes seconds, long enough to kill its process midway."""
    rows = "\n".join(f"{i % 97},{(i * 7) % 13},{'ab'[i % 2]}" for i in range(20_000))
    path = tmp_path / "slow.csv"
    path.write_text("x,y,label\n" + rows + "\n")
    return path


def submit(client: httpx.Client, name: str, csv_path: Path, target: str, **form: str) -> str:
    answer = submit_training(client, name, csv_path, target, **form)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def wait_running_in(
    worker: CeleryWorker, client: httpx.Client, job_id: str, after: str | None = None
) -> tuple[int, str]:
    """(pid of the worker's job process, started_at) once an attempt of the job started
    later than `after` runs in it: a killed attempt's record still says running."""
    deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS * 4
    job: dict[str, object] = {}
    for _ in range(2000):
        job = client.get(f"/jobs/{job_id}").json()
        started = job.get("started_at")
        if job["status"] == "running" and isinstance(started, str) and started != after:
            return job_process(worker), started
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start a new attempt: {job}")


def versions_of(client: httpx.Client, name: str) -> list[int]:
    return [v["version"] for v in client.get(f"/models/{name}").json()["versions"]]


def test_iris_trains_on_a_celery_worker_and_every_route_sees_the_job(stack: Stack) -> None:
    with running_worker(stack.work_dir, stack.redis.url), stack.server.client() as client:
        ready = client.get("/health/ready").json()
        assert ready["checks"]["broker"] == "ok", ready
        job = train(client, "iris", TRAIN_CSV)
        assert job["status"] == "succeeded", job
        assert job["result"]["version"] == 1
        assert [j["id"] for j in client.get("/jobs").json()["jobs"]] == [job["id"]]
        answer = client.post(
            "/models/iris/predict",
            json={
                "rows": [
                    {
                        "sepal_length": 5.1,
                        "sepal_width": 3.5,
                        "petal_length": 1.4,
                        "petal_width": 0.2,
                    }
                ]
            },
        )
        assert answer.json()["predictions"] == ["setosa"], answer.text
        # Unknown ids are 404, never Celery's PENDING.
        assert client.get("/jobs/00000000-0000-4000-8000-000000000000").status_code == 404
        assert client.get("/jobs/not-a-uuid").status_code == 404


def test_a_cancelled_queued_job_never_runs(stack: Stack) -> None:
    with stack.server.client() as client:
        # No worker yet: the job stays queued in Redis.
        doomed = submit(client, "doomed", TRAIN_CSV, "species")
        cancelled = client.delete(f"/jobs/{doomed}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        with running_worker(stack.work_dir, stack.redis.url):
            # One process takes the queue in order: once the later job is done, the
            # cancelled one was delivered first and did nothing.
            later = train(client, "later", TRAIN_CSV)
            assert later["status"] == "succeeded", later
        assert client.get(f"/jobs/{doomed}").json()["status"] == "cancelled"
        assert client.get("/models/doomed").status_code == 404


def test_a_killed_job_process_is_redelivered_and_commits_one_version(
    stack: Stack, tmp_path: Path
) -> None:
    csv_path = slow_csv(tmp_path)
    with (
        running_worker(stack.work_dir, stack.redis.url) as worker,
        stack.server.client() as client,
    ):
        job_id = submit(client, "slow", csv_path, "label", params='{"n_estimators": 300}')
        victim, _ = wait_running_in(worker, client, job_id)
        os.kill(victim, signal.SIGKILL)
        assert wait_until_gone([victim]) == []
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded", (job, worker.output()[-3000:])
        assert versions_of(client, "slow") == [1]
        assert is_alive(worker.process.pid)


def test_a_job_that_kills_its_process_every_time_fails_after_the_attempts(
    stack: Stack, tmp_path: Path
) -> None:
    csv_path = slow_csv(tmp_path)
    with (
        running_worker(stack.work_dir, stack.redis.url, stack.env) as worker,
        stack.server.client() as client,
    ):
        job_id = submit(client, "poison", csv_path, "label", params='{"n_estimators": 300}')
        started: str | None = None
        for _ in range(2):  # FASTML_JOB_MAX_ATTEMPTS=2
            victim, started = wait_running_in(worker, client, job_id, after=started)
            os.kill(victim, signal.SIGKILL)
            assert wait_until_gone([victim]) == []
        job = wait_for_job(client, job_id)
        assert job["status"] == "failed", job
        assert "2 attempts" in job["error"], job
        assert client.get("/models/poison").status_code == 404
        # The worker goes on serving other jobs.
        assert train(client, "after", TRAIN_CSV)["status"] == "succeeded"


def test_redis_away_makes_the_api_unready_and_refuses_training_then_recovers(
    stack: Stack,
) -> None:
    uploads = stack.server.model_dir / "_state" / "uploads"
    with stack.server.client() as client:
        # Queued with no worker running: it must survive the Redis restart (append-only).
        before = submit(client, "before", TRAIN_CSV, "species")
        stack.redis.stop()
        ready = client.get("/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["broker"] != "ok"
        assert client.get("/health/live").status_code == 200
        uploads_before = set(uploads.iterdir())
        refused = submit_training(client, "iris", TRAIN_CSV)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) > 0
        assert set(uploads.iterdir()) == uploads_before  # no half-created job, no upload

        stack.redis.start()
        deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
        for _ in range(300):
            if client.get("/health/ready").status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert client.get("/health/ready").status_code == 200
        with running_worker(stack.work_dir, stack.redis.url):
            assert train(client, "after", TRAIN_CSV)["status"] == "succeeded"
            assert wait_for_job(client, before)["status"] == "succeeded"
        assert [j["model_name"] for j in client.get("/jobs").json()["jobs"]] == [
            "after",
            "before",
        ]
