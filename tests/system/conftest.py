"""Real servers for system tests: gunicorn with Uvicorn workers on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ML.config import PROJECT_DIR
from tests.conftest import ADMIN

READY_DEADLINE_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dockerfile_command() -> list[str]:
    """The image's CMD, so these tests start the server exactly as the container does."""
    for line in (PROJECT_DIR / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            import json

            return list(json.loads(line[4:]))
    raise AssertionError("Dockerfile has no CMD")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    model_dir: Path
    output_path: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=ADMIN, timeout=30, **kwargs)  # type: ignore[arg-type]

    def worker_pid_of(self, request_id: str) -> int | None:
        """Which worker answered: its pid is on the request's log line (written within 0.2 s)."""
        deadline = time.monotonic() + 5
        for _ in range(100):
            for line in self.log_path.read_text().splitlines():
                if f"request_id={request_id}" in line:
                    return int(line.split()[2])
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return None


def start_server(tmp_path: Path, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    model_dir = tmp_path / "models"
    log_path = tmp_path / "ML_server.log"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FASTML_BIND": f"127.0.0.1:{port}",
        "FASTML_WORKERS": "2",
        "FASTML_MODEL_DIR": str(model_dir),
        "FASTML_LOG_PATH": str(log_path),
        "FASTML_MODEL_POLL_SECONDS": "0.5",
        "SERVICE_USER": ADMIN[0],
        "SERVICE_PASS": ADMIN[1],
        **(extra_env or {}),
    }
    output_path = tmp_path / "gunicorn.out"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            dockerfile_command(),
            cwd=PROJECT_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test may kill it whole
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, model_dir, output_path)
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    for _ in range(1000):
        if process.poll() is not None:
            raise AssertionError(f"server exited: {output_path.read_text()}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    stop_server(server)
    raise AssertionError(f"server not ready: {shlex.join(dockerfile_command())}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path)
    try:
        yield running
    finally:
        stop_server(running)
