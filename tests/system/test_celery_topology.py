"""The one-machine topology in the Celery mode: nginx in front of two gunicorn replicas (two
workers each), two `celery --app ML.tasks worker` processes and a private append-only Redis,
all on one model folder. Real processes on 127.0.0.1, started once for the module.

What tests/system/test_celery_jobs.py proves with one replica and one worker (a killed job
process, a poison job, jobs queued before a Redis restart) is not repeated here.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from testing.celery_workers import CeleryWorker
from testing.fastml_api import train, wait_for_job
from testing.topology import Topology, start_topology, stop_topology
from tests.redis_fixture import RedisServer, running_redis
from tests.system.fault_tools import (
    TRAIN_CSV,
    children_of,
    is_alive,
    parent_of,
    wait_until_gone,
)
from tests.system.test_celery_jobs import slow_csv, submit, versions_of
from tests.system.test_load_client import CLIENT_TIMEOUT_SECONDS
from tests.system.test_readme import check_tour_output, copy_project, run_tour
from tests.system.test_topology import (
    check_replicas_agree_after_the_tour,
    generated_admin,
    predict_through_nginx_killing_a_worker,
)

pytestmark = pytest.mark.system

# Short limits, so a killed worker's job is delivered again soon: the visibility timeout is
# the time limit plus twice the grace, 70 s from the job's start, and the workers look at
# Redis every 10 s. The limit leaves room for the slow job on a loaded machine: it took
# 29 s at a load of 12 on two cores (a few seconds on a quiet one).
JOB_LIMITS_ENV = {"FASTML_JOB_TIME_LIMIT_SECONDS": "60", "FASTML_JOB_STOP_GRACE_SECONDS": "5"}
SLOW_JOB_PARAMS = '{"n_estimators": 60}'
REDELIVERY_DEADLINE_SECONDS = 180.0
RECOVERY_DEADLINE_SECONDS = 30.0
# test_topology.py sends 100,000 through the embedded topology; predictions take the same
# path in the Celery mode (only jobs and failed logins differ), so fewer show it here.
LOAD_REQUESTS = 20_000
KILL_AFTER_SECONDS = 2.0
LOGIN_MAX_FAILURES = 10  # FASTML_LOGIN_MAX_FAILURES' default


@dataclass
class CeleryTopology:
    topology: Topology
    redis: RedisServer
    project_dir: Path

    @property
    def admin(self) -> tuple[str, str]:
        return generated_admin(self.topology)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.topology.url, auth=self.admin, timeout=30)


@pytest.fixture(scope="module")
def celery_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryTopology]:
    """In a copy of the project whose model folder is the shared one, as the README tour
    expects (it reads the admin the first replica generates there)."""
    root = tmp_path_factory.mktemp("celery-topology")
    project = copy_project(root / "fastml")
    with running_redis(root / "redis", append_only=True) as redis_server:
        topology = start_topology(
            root / "topology",
            model_dir=project / "ML" / "saved_models",
            admin=None,
            broker_url=redis_server.url,
            extra_env=JOB_LIMITS_ENV,
        )
        try:
            yield CeleryTopology(topology, redis_server, project)
        finally:
            stop_topology(topology)


# First in the file, so first to run: the tour expects a fresh model folder.
@pytest.mark.timeout(360)  # three jobs on the Celery workers
def test_the_readme_tour_through_nginx_runs_on_the_workers_and_both_replicas_agree(
    celery_topology: CeleryTopology,
) -> None:
    topology = celery_topology.topology
    check_tour_output(run_tour(celery_topology.project_dir, topology.url.removeprefix("http://")))
    check_replicas_agree_after_the_tour(topology)
    ran = sum(worker.output().count("] succeeded in") for worker in topology.celery_workers)
    assert ran >= 3, [worker.output()[-2000:] for worker in topology.celery_workers]


def test_wrong_passwords_spread_over_both_replicas_are_throttled_as_one(
    celery_topology: CeleryTopology,
) -> None:
    # A user of its own: counters are per client and user, so the admin is not locked out.
    # Each replica sees half the failures: only counters shared in Redis reach the limit.
    guess = ("mallory", "wrong")
    replicas = celery_topology.topology.replicas
    statuses = [
        httpx.get(f"{replicas[attempt % 2].url}/models", auth=guess).status_code
        for attempt in range(LOGIN_MAX_FAILURES)
    ]
    assert statuses == [401] * LOGIN_MAX_FAILURES
    for url in [replica.url for replica in replicas] + [celery_topology.topology.url]:
        refused = httpx.get(f"{url}/models", auth=guess)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) > 0


def test_a_redis_restart_takes_both_replicas_out_and_back_and_the_workers_reconnect(
    celery_topology: CeleryTopology,
) -> None:
    topology = celery_topology.topology
    workers = [worker.process.pid for worker in topology.celery_workers]
    celery_topology.redis.stop()
    for replica in topology.replicas:
        ready = httpx.get(f"{replica.url}/health/ready")
        assert ready.status_code == 503, ready.text
        assert httpx.get(f"{replica.url}/health/live").status_code == 200
    assert httpx.get(f"{topology.url}/health/ready").status_code == 503

    celery_topology.redis.start()  # the same port and append-only file
    for replica in topology.replicas:
        wait_ready(replica.url)
    assert httpx.get(f"{topology.url}/health/ready").status_code == 200
    # Nothing was restarted: the same workers take the next job.
    with celery_topology.client() as client:
        job = train(client, "after-restart", TRAIN_CSV)
    assert job["status"] == "succeeded", job
    assert [worker.process.pid for worker in topology.celery_workers] == workers
    assert all(is_alive(pid) for pid in workers)


@pytest.mark.timeout(CLIENT_TIMEOUT_SECONDS + 120)
def test_predictions_through_nginx_survive_a_killed_api_worker(
    celery_topology: CeleryTopology, tmp_path: Path, iris_train_csv: Path
) -> None:
    predict_through_nginx_killing_a_worker(
        celery_topology.topology,
        tmp_path,
        iris_train_csv,
        LOAD_REQUESTS,
        celery_topology.admin,
        KILL_AFTER_SECONDS,
    )


@pytest.mark.timeout(REDELIVERY_DEADLINE_SECONDS + 120)
def test_a_whole_worker_killed_mid_training_leaves_its_job_to_the_other_one(
    celery_topology: CeleryTopology, tmp_path: Path
) -> None:
    topology = celery_topology.topology
    with celery_topology.client() as client:
        job_id = submit(client, "slow", slow_csv(tmp_path), "label", params='{"n_estimators": 300}')
        victim = worker_running(celery_topology, client, job_id)
        group = [victim.process.pid, *children_of(victim.process.pid)]
        os.killpg(victim.process.pid, signal.SIGKILL)  # its session: main and pool processes
        victim.process.wait(timeout=30)
        assert wait_until_gone(group) == []
        assert client.get(f"/jobs/{job_id}").json()["status"] == "running"  # killed mid-job

        job = wait_for_job(client, job_id, deadline_seconds=REDELIVERY_DEADLINE_SECONDS)
        survivor = next(worker for worker in topology.celery_workers if worker is not victim)
        assert job["status"] == "succeeded", (job, survivor.output()[-3000:])
        assert versions_of(client, "slow") == [1]
        assert job["result"]["version"] == 1
    assert is_alive(survivor.process.pid)


def worker_running(
    celery_topology: CeleryTopology, client: httpx.Client, job_id: str
) -> CeleryWorker:
    """The worker whose pool process holds the running job (its pid is in the record's
    owner, `host:pid:...`)."""
    records = redis.Redis.from_url(celery_topology.redis.url, decode_responses=True)
    deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS * 4
    job: dict[str, object] = {}
    try:
        for _ in range(2000):
            job = client.get(f"/jobs/{job_id}").json()
            owner = records.hget(f"fastml:job:{job_id}", "owner")
            if job["status"] == "running" and owner:
                parent = parent_of(int(str(owner).split(":")[1]))
                for worker in celery_topology.topology.celery_workers:
                    if worker.process.pid == parent:
                        return worker
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        records.close()
    raise AssertionError(f"job {job_id} did not start on a worker: {job}")


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
    for _ in range(int(RECOVERY_DEADLINE_SECONDS / 0.1) + 1):
        if httpx.get(f"{url}/health/ready").status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 200, ready.text
