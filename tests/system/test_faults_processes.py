"""Killed server processes take their training processes with them, and their versions too.

A job whose server process died must end failed with nothing published: the training
process dies with its parent (PR_SET_PDEATHSIG), and even one that lived on could not
commit, because a version is published only by the job's owner while the job still runs.
Once every process that could commit is gone, no version can appear later, so the checks
of the model store right after that are final.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from testing.fastml_api import submit_training, wait_for_job
from testing.servers import Server, start_server, stop_server
from tests.system.fault_tools import (
    descendants_of,
    parent_of,
    train_and_wait,
    training_process_of,
    wait_until_gone,
)
from tests.system.test_crash_recovery import slow_training_csv

pytestmark = pytest.mark.system
SLOW_PARAMS = '{"n_estimators": 300}'
GRACEFUL_TIMEOUT_SECONDS = 2


def start_slow_job(client: httpx.Client, csv_path: Path) -> str:
    answer = submit_training(client, "slow", csv_path, "label", params=SLOW_PARAMS)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    wait_for_job(client, job_id, frozenset({"running"}))
    return job_id


def assert_only_version_one(client: httpx.Client) -> None:
    model = client.get("/models/slow").json()
    assert [v["version"] for v in model["versions"]] == [1], model
    assert model["current_version"] == 1, model


def train_first_version(server: Server, csv_path: Path) -> None:
    small = csv_path.with_name("small.csv")
    small.write_text("".join(csv_path.read_text().splitlines(keepends=True)[:300]))
    with server.client() as client:
        assert train_and_wait(client, "slow", small, "label") == 1


def test_a_killed_worker_fails_its_job_and_its_training_process_dies(tmp_path: Path) -> None:
    csv_path = slow_training_csv(tmp_path / "slow.csv")
    # One worker: with two, the training process found could be the idle one the other
    # worker keeps after its own job, and the wrong worker would be killed.
    server = start_server(tmp_path, workers=1)
    try:
        train_first_version(server, csv_path)
        with server.client() as client:
            job_id = start_slow_job(client, csv_path)
            training = training_process_of(server.process.pid)
            worker = parent_of(training)
            assert worker is not None
            doomed = [training, *descendants_of(worker)]

            os.kill(worker, signal.SIGKILL)

            assert wait_until_gone(doomed) == []
            job = wait_for_job(client, job_id, frozenset({"failed", "succeeded"}))
            assert job["status"] == "failed", job
            assert "stopped" in job["error"]
            assert_only_version_one(client)
            # The replacement worker trains again as usual.
            assert train_and_wait(client, "slow", csv_path.with_name("small.csv"), "label") > 1
    finally:
        stop_server(server)


def test_sigterm_past_the_graceful_timeout_stops_training_with_the_server(
    tmp_path: Path,
) -> None:
    csv_path = slow_training_csv(tmp_path / "slow.csv")
    graceful = {"GUNICORN_CMD_ARGS": f"--graceful-timeout {GRACEFUL_TIMEOUT_SECONDS}"}
    server = start_server(tmp_path, graceful)
    try:
        train_first_version(server, csv_path)
        with server.client() as client:
            job_id = start_slow_job(client, csv_path)
        training = training_process_of(server.process.pid)
        ours = [training, *descendants_of(server.process.pid)]

        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30 + GRACEFUL_TIMEOUT_SECONDS)

        assert wait_until_gone(ours) == []
    except subprocess.TimeoutExpired:
        raise AssertionError("gunicorn did not stop past its graceful timeout") from None
    finally:
        stop_server(server)

    restarted = start_server(tmp_path)
    try:
        with restarted.client() as client:
            job = wait_for_job(client, job_id, frozenset({"failed", "succeeded"}))
            assert job["status"] == "failed", job
            assert_only_version_one(client)
    finally:
        stop_server(restarted)
