"""A SIGTERM stops a real server (with a training process started) without alarming output."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from testing.fastml_api import train
from testing.servers import start_server, stop_server

pytestmark = pytest.mark.system
GROUP_EXIT_DEADLINE_SECONDS = 30


def wait_for_group_exit(group_id: int) -> None:
    """Every process of the server's group (the resource tracker too) has exited."""
    deadline = time.monotonic() + GROUP_EXIT_DEADLINE_SECONDS
    for _ in range(1000):
        try:
            os.killpg(group_id, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"processes of group {group_id} still running after the server stopped")


def test_sigterm_prints_no_socket_error_leak_or_traceback(
    tmp_path: Path, iris_train_csv: Path
) -> None:
    server = start_server(tmp_path)
    try:
        with server.client() as client:
            # A finished job: the worker's process pool and its log queue exist at shutdown.
            assert train(client, "iris", iris_train_csv)["status"] == "succeeded"
    finally:
        stop_server(server)
    wait_for_group_exit(server.process.pid)

    assert server.process.returncode == 0
    output = server.output_path.read_text()
    assert "Shutting down: Master" in output  # the whole output was read
    for alarming in ("Error while closing socket", "leaked semaphore", "Traceback", "ERROR"):
        assert alarming not in output, output
