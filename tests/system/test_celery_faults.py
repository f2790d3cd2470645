"""The fault tests of the embedded mode (test_faults_*.py), on the Celery mode.

Real gunicorn with FASTML_BROKER_URL, a private append-only redis-server and real
`celery --app ML.tasks worker` processes. Two stacks, one per module each: one on a plain
folder (processes killed, time limit, the store moved away) and one whose model folder is
a small tmpfs the test fills (as root; skipped with the reason otherwise).

Whatever is killed, a job ends succeeded with exactly one version or failed with none.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from testing.celery_workers import CeleryWorker, start_worker, stop_worker
from testing.fastml_api import submit_training, wait_for_job
from testing.servers import Server, start_server, stop_server
from tests.celery_workers import job_process
from tests.redis_fixture import RedisServer, running_redis
from tests.system.fault_tools import TRAIN_CSV, is_alive, train_and_wait, wait_until_gone
from tests.system.test_crash_recovery import slow_training_csv
from tests.system.test_faults_disk import big_csv, predicts
from tests.system.test_faults_store import MODEL_POLL_SECONDS, assert_never_404_or_500
from tests.tmpfs import fill_disk, small_tmpfs

pytestmark = pytest.mark.system

# Long enough for the module's jobs on a loaded machine; the worker that replaces a killed
# one has a short limit, for the time-limit test and a quick redelivery (the broker hands a
# dead worker's job to another this + 60 s after it started, swept every 10 s).
TIME_LIMIT_SECONDS = 60
SHORT_TIME_LIMIT_SECONDS = 5
SLOW_PARAMS = '{"n_estimators": 100}'  # seconds quiet, tens of seconds loaded
# Still training when the worker is killed, however fast the machine.
KILLED_PARAMS = '{"n_estimators": 300}'
ENDLESS_PARAMS = '{"n_estimators": 100000}'  # far longer than SHORT_TIME_LIMIT_SECONDS
SHUTDOWN_GRACE_SECONDS = 2  # what a supervisor waits after SIGTERM before SIGKILL
REDELIVERY_DEADLINE_SECONDS = SHORT_TIME_LIMIT_SECONDS + 60 + 60


def worker_env(model_dir: Path, time_limit: int) -> dict[str, str]:
    return {"FASTML_JOB_TIME_LIMIT_SECONDS": str(time_limit), "FASTML_MODEL_DIR": str(model_dir)}


@dataclass
class CeleryStack:
    """gunicorn (2 workers) and one Celery worker sharing a model folder and a Redis."""

    server: Server
    redis_url: str
    work_dir: Path
    worker: CeleryWorker
    model_dir: Path
    time_limit: int = TIME_LIMIT_SECONDS

    def restart_worker(self, time_limit: int) -> None:
        stop_worker(self.worker)
        env = worker_env(self.model_dir, time_limit)
        self.worker = start_worker(self.work_dir, self.redis_url, env)
        self.time_limit = time_limit


def running_stack(work_dir: Path, redis_url: str, model_dir: Path) -> Iterator[CeleryStack]:
    """A stack serving iris version 1; for fixtures (`yield from`), stopped when it ends."""
    env = {"FASTML_BROKER_URL": redis_url, "FASTML_MODEL_DIR": str(model_dir)}
    server = start_server(work_dir, env)
    worker = start_worker(work_dir, redis_url, worker_env(model_dir, TIME_LIMIT_SECONDS))
    stack = CeleryStack(server, redis_url, work_dir, worker, model_dir)
    try:
        with server.client() as client:
            assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 1
        yield stack
    finally:
        stop_worker(stack.worker)
        stop_server(stack.server)


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis"), append_only=True) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer
) -> Iterator[CeleryStack]:
    work_dir = tmp_path_factory.mktemp("celery-stack")
    yield from running_stack(work_dir, module_redis.url, work_dir / "models")


@pytest.fixture(scope="module")
def disk_stack(
    tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer
) -> Iterator[CeleryStack]:
    """The model folder (and its uploads) on a 4 MB tmpfs; Redis database 1, so its
    queue is not the other stack's."""
    work_dir = tmp_path_factory.mktemp("celery-disk")
    with small_tmpfs(work_dir / "disk") as disk:
        yield from running_stack(
            work_dir, module_redis.url.rsplit("/", 1)[0] + "/1", disk / "models"
        )


@pytest.fixture(scope="module")
def slow_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return slow_training_csv(tmp_path_factory.mktemp("csv") / "slow.csv")


def submit(client: httpx.Client, name: str, csv_path: Path, target: str, params: str) -> str:
    answer = submit_training(client, name, csv_path, target, params=params)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def versions_of(client: httpx.Client, name: str) -> list[int]:
    answer = client.get(f"/models/{name}")
    if answer.status_code == 404:
        return []
    assert answer.status_code == 200, answer.text
    return [v["version"] for v in answer.json()["versions"]]


def assert_record_and_store_agree(client: httpx.Client, job: dict[str, object], name: str) -> None:
    """Succeeded with exactly its one version, or failed with none."""
    assert job["status"] in ("succeeded", "failed"), job
    if job["status"] == "succeeded":
        assert versions_of(client, name) == [job["result"]["version"]], job  # type: ignore[index]
    else:
        assert versions_of(client, name) == [], job


def test_killing_the_api_worker_that_submitted_a_job_changes_nothing(
    stack: CeleryStack, slow_csv: Path
) -> None:
    with stack.server.client() as client:
        answer = submit_training(client, "submitted", slow_csv, "label", params=SLOW_PARAMS)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        api_worker = stack.server.worker_pid_of(answer.headers["x-request-id"])
        assert api_worker is not None
        wait_for_job(client, job_id, frozenset({"running"}))

        os.kill(api_worker, signal.SIGKILL)

    # A new connection: the one above may have been the killed worker's.
    with stack.server.client() as client:
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded", (job, stack.worker.output()[-3000:])
        assert versions_of(client, "submitted") == [1]


def test_a_store_moved_away_fails_the_running_job_serves_loaded_models_and_is_not_recreated(
    stack: CeleryStack, slow_csv: Path
) -> None:
    moved = stack.work_dir / "moved-away"
    with stack.server.client() as client:
        job_id = submit(client, "moving", slow_csv, "label", SLOW_PARAMS)
        wait_for_job(client, job_id, frozenset({"running"}))
        stack.model_dir.rename(moved)
        try:
            time.sleep(MODEL_POLL_SECONDS * 4)  # every worker has polled the missing store
            assert_never_404_or_500(stack.server)
            refused = submit_training(client, "iris", TRAIN_CSV, "species")
            assert refused.status_code == 503, refused.text
            assert f"model store at {stack.model_dir}" in refused.json()["error"]["message"]
            assert httpx.get(f"{stack.server.url}/health/ready").status_code == 503

            job = wait_for_job(client, job_id)
            assert job["status"] == "failed", job
            assert str(stack.model_dir) in job["error"], job
            # A Celery worker (re)started meanwhile boots and creates nothing either.
            stack.restart_worker(stack.time_limit)
            assert not stack.model_dir.exists(), list(stack.model_dir.rglob("*"))
        finally:
            if not stack.model_dir.exists():
                moved.rename(stack.model_dir)
        assert versions_of(client, "moving") == []
        predicts(stack.server)
        assert train_and_wait(client, "moving", TRAIN_CSV, "species") == 1


def test_sigterm_past_the_grace_then_sigkill_leaves_no_process_and_one_outcome(
    stack: CeleryStack, slow_csv: Path
) -> None:
    """A supervisor's stop (SIGTERM, then SIGKILL of the worker's main process after its
    grace): the pool process dies with its parent, and the job runs again on the next
    worker once the broker's visibility timeout passed."""
    with stack.server.client() as client:
        job_id = submit(client, "stopped", slow_csv, "label", KILLED_PARAMS)
        wait_for_job(client, job_id, frozenset({"running"}))
        main = stack.worker.process.pid
        pool_process = job_process(stack.worker)

        stack.worker.process.send_signal(signal.SIGTERM)
        time.sleep(SHUTDOWN_GRACE_SECONDS)
        assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
        os.kill(main, signal.SIGKILL)

        assert wait_until_gone([main, pool_process]) == [], stack.worker.output()[-3000:]
        stack.worker.process.wait(timeout=10)
        assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
        assert versions_of(client, "stopped") == []

        stack.restart_worker(SHORT_TIME_LIMIT_SECONDS)
        job = wait_for_job(client, job_id, deadline_seconds=REDELIVERY_DEADLINE_SECONDS)
        assert_record_and_store_agree(client, job, "stopped")
        assert is_alive(stack.worker.process.pid)


def test_a_job_past_its_time_limit_fails_saying_so_and_publishes_nothing(
    stack: CeleryStack,
) -> None:
    if stack.time_limit != SHORT_TIME_LIMIT_SECONDS:  # run alone, not after the test above
        stack.restart_worker(SHORT_TIME_LIMIT_SECONDS)
    with stack.server.client() as client:
        job_id = submit(client, "endless", TRAIN_CSV, "species", ENDLESS_PARAMS)
        job = wait_for_job(client, job_id, deadline_seconds=SHORT_TIME_LIMIT_SECONDS + 90)
        assert job["status"] == "failed", job
        assert "FASTML_JOB_TIME_LIMIT_SECONDS" in job["error"], job
        assert "internal error" not in job["error"], job
        assert versions_of(client, "endless") == []


def test_an_upload_that_fills_the_disk_answers_507_and_creates_no_job(
    disk_stack: CeleryStack, tmp_path: Path
) -> None:
    upload = big_csv(tmp_path / "big.csv", megabytes=6)
    uploads_dir = disk_stack.model_dir / "_state" / "uploads"
    with disk_stack.server.client() as client:
        jobs_before = client.get("/jobs").json()["jobs"]

        answer = submit_training(client, "iris", upload, "label")

        assert answer.status_code == 507, answer.text
        message = answer.json()["error"]["message"]
        assert "disk is full" in message and str(uploads_dir) in message
        assert list(uploads_dir.iterdir()) == []
        assert client.get("/jobs").json()["jobs"] == jobs_before
        assert httpx.get(f"{disk_stack.server.url}/health/ready").json()["status"] == "ready"
        assert train_and_wait(client, "iris", TRAIN_CSV, "species") > 1


def noisy_csv(path: Path, rows: int) -> Path:
    """Small to upload, big to save: a forest of full-depth trees on noise."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)).round(3), columns=["a", "b", "c"])
    frame["label"] = rng.integers(0, 2, rows).astype(str)
    frame.to_csv(path, index=False)
    return path


def test_a_worker_that_cannot_save_the_model_fails_the_job_saying_the_disk_is_full(
    disk_stack: CeleryStack, tmp_path: Path
) -> None:
    csv_path = noisy_csv(tmp_path / "noisy.csv", rows=3000)
    with disk_stack.server.client() as client:
        versions = versions_of(client, "iris")
        filler = fill_disk(disk_stack.model_dir.parent, leave_bytes=512 * 1024)
        try:
            answer = submit_training(
                client, "iris", csv_path, "label", params='{"n_estimators": 40}'
            )
            assert answer.status_code == 202, answer.text
            job = wait_for_job(client, answer.json()["id"])

            assert job["status"] == "failed", job
            assert job["error"].startswith(
                f"no space left in the model store at {disk_stack.model_dir}"
            ), job
            assert versions_of(client, "iris") == versions
        finally:
            filler.unlink()
        assert train_and_wait(client, "iris", TRAIN_CSV, "species") > max(versions)


def test_the_api_starts_on_a_full_disk_and_serves_predictions(disk_stack: CeleryStack) -> None:
    stop_server(disk_stack.server)
    filler = fill_disk(disk_stack.model_dir.parent)
    try:
        env = {
            "FASTML_BROKER_URL": disk_stack.redis_url,
            "FASTML_MODEL_DIR": str(disk_stack.model_dir),
        }
        disk_stack.server = start_server(disk_stack.work_dir, env)
        predicts(disk_stack.server)
        ready = httpx.get(f"{disk_stack.server.url}/health/ready").json()
        assert ready["status"] == "degraded", ready
        assert "no space left" in ready["checks"]["model_store"], ready
        with disk_stack.server.client() as client:
            answer = submit_training(client, "iris", TRAIN_CSV, "species")
            assert answer.status_code == 507, answer.text
            assert "disk is full" in answer.json()["error"]["message"]
            assert client.get("/jobs").status_code == 200  # the records are in Redis
    finally:
        filler.unlink()
