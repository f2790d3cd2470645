"""A server killed mid-job leaves no job 'running' forever: the next start marks it failed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testing.fastml_api import wait_for_job
from testing.servers import start_server, stop_server

pytestmark = pytest.mark.system
DEADLINE_SECONDS = 60


def slow_training_csv(path: Path) -> Path:
    """Enough noisy rows that a 300-tree forest trains for several seconds."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(20_000, 8)), columns=[f"x{i}" for i in range(8)])
    frame["label"] = rng.integers(0, 3, len(frame)).astype(str)
    frame.to_csv(path, index=False)
    return path


def test_killed_server_job_is_failed_after_restart(tmp_path: Path) -> None:
    csv_path = slow_training_csv(tmp_path / "slow.csv")
    server = start_server(tmp_path)
    try:
        with server.client() as client, csv_path.open("rb") as file:
            answer = client.post(
                "/models/slow/train",
                files={"csv_file": ("slow.csv", file)},
                data={"target_variable": "label", "params": '{"n_estimators": 300}'},
            )
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["id"]
            wait_for_job(client, job_id, frozenset({"running"}), DEADLINE_SECONDS)
        # Kill gunicorn, its workers and the training process at once: no clean shutdown.
        os.killpg(os.getpgid(server.process.pid), signal.SIGKILL)
        server.process.wait(timeout=30)
    finally:
        stop_server(server)

    restarted = start_server(tmp_path)
    try:
        with restarted.client() as client:
            job = wait_for_job(client, job_id, deadline_seconds=DEADLINE_SECONDS)
        assert job["status"] == "failed"
        assert "stopped" in job["error"]
    finally:
        stop_server(restarted)
