"""Real gunicorn servers on free 127.0.0.1 ports, for the test suite and the benchmarks alike.

The server is started with the Dockerfile's own CMD, so the command the image runs is the one
tested and measured; another ASGI app (the benchmark's ceiling) swaps only the app argument.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

PROJECT_DIR = Path(__file__).resolve().parent.parent
FASTML_APP = "wsgi:app"
# The fast-ml template's SERVICE_USER / SERVICE_PASS: the admin of every throwaway server.
ADMIN = ("admin", "password")
READY_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.2
# A started server's storage, identity and bind address are its own; other FASTML_ knobs
# of the caller's environment pass through (a benchmark may be run with FASTML_BATCH_...).
OWNED_ENV = (
    "FASTML_BIND",
    "FASTML_WORKERS",
    "FASTML_MODEL_DIR",
    "FASTML_STATE_DIR",
    "FASTML_LOG_PATH",
    "FASTML_SECRET_KEY",
    "FASTML_BROKER_URL",
    "FASTML_USERS_FILE",
    "FASTML_SERVICE_USER",
    "FASTML_SERVICE_PASS",
    "SERVICE_USER",
    "SERVICE_PASS",
)


class ServerError(Exception):
    """A server that exited or never became ready; the message holds the end of its output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dockerfile_command(app: str = FASTML_APP) -> list[str]:
    """The image's CMD (`gunicorn -c gunicorn/gunicorn-config.py wsgi:app`), serving `app`."""
    for line in (PROJECT_DIR / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            command = [str(part) for part in json.loads(line[4:])]
            if FASTML_APP not in command:
                raise ServerError(f"the Dockerfile's CMD does not serve {FASTML_APP}: {line}")
            return [app if part == FASTML_APP else part for part in command]
    raise ServerError("the Dockerfile has no CMD line")


@dataclass
class Server:
    """A running gunicorn master (in its own process group) and where it keeps its files."""

    name: str
    url: str
    command: list[str]
    process: subprocess.Popen[bytes]
    work_dir: Path
    output_path: Path

    @property
    def model_dir(self) -> Path:
        return self.work_dir / "models"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "ML_server.log"

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client logged in as ADMIN (tests only: httpx is a test dependency)."""
        import httpx

        return httpx.Client(base_url=self.url, auth=ADMIN, timeout=30, **kwargs)

    def output_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.output_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no output)"

    def worker_pid_of(self, request_id: str, deadline_seconds: float = 5.0) -> int | None:
        """Which worker answered: its pid is on the request's log line (written within 0.2 s)."""
        deadline = time.monotonic() + deadline_seconds
        for _ in range(int(deadline_seconds / 0.05) + 1):
            with contextlib.suppress(FileNotFoundError):
                for line in self.log_path.read_text().splitlines():
                    if f"request_id={request_id}" in line:
                        return int(line.split()[2])
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return None


def server_env(
    port: int, workers: int, admin: tuple[str, str] | None, extra: dict[str, str]
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in OWNED_ENV}
    # `gunicorn` in the CMD must be this interpreter's (the venv's), whatever PATH says.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"FASTML_BIND": f"127.0.0.1:{port}", "FASTML_WORKERS": str(workers)})
    if admin is not None:
        env.update({"SERVICE_USER": admin[0], "SERVICE_PASS": admin[1]})
    return {**env, **extra}


def start_server(
    work_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    app: str = FASTML_APP,
    name: str = "fastml",
    workers: int = 2,
    admin: tuple[str, str] | None = ADMIN,
    project_dir: Path = PROJECT_DIR,
) -> Server:
    """Start the Dockerfile's CMD serving `app` on a free port; return once /health/ready is 200.

    `project_dir` is the code it runs: another checkout (an older commit) can be measured beside
    this one.

    Models, state and the log go under `work_dir` (`models/`, `ML_server.log`); `admin=None`
    configures no user, so the server generates its admin. Raises ServerError, having stopped
    the server, when it exits or is not ready within READY_DEADLINE_SECONDS.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = dockerfile_command(app)
    env = {
        "FASTML_MODEL_DIR": str(work_dir / "models"),
        "FASTML_LOG_PATH": str(work_dir / "ML_server.log"),
        **(extra_env or {}),
    }
    output_path = work_dir / f"{name}.out"
    with output_path.open("wb") as output:
        # A session of its own: a test may kill the group whole, and Ctrl-C reaches only the
        # caller, which then stops the server itself.
        process = subprocess.Popen(
            command,
            cwd=project_dir,
            env=server_env(port, workers, admin, env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, f"http://127.0.0.1:{port}", command, process, work_dir, output_path)
    try:
        wait_until_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def is_ready(url: str) -> bool:
    """GET /health/ready answers 200; http.client, so proxy settings never get in the way."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=2)
    try:
        connection.request("GET", "/health/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    for _ in range(int(READY_DEADLINE_SECONDS / POLL_SECONDS) + 1):
        if server.process.poll() is not None:
            raise ServerError(
                f"the {server.name} server exited with code {server.process.returncode} before "
                f"it was ready; its output:\n{server.output_tail()}"
            )
        if is_ready(server.url):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    raise ServerError(
        f"the {server.name} server was not ready after {READY_DEADLINE_SECONDS:.0f} s "
        f"({shlex.join(server.command)}); its output:\n{server.output_tail()}"
    )


def stop_server(server: Server) -> None:
    """SIGTERM to the master (a graceful stop); SIGKILL to its process group past the deadline."""
    stop_session_leader(server.process)


def stop_session_leader(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a process started with start_new_session (gunicorn's master, a Celery
    worker); SIGKILL to its process group past STOP_DEADLINE_SECONDS."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_DEADLINE_SECONDS)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        # The group is the process's own session: its children and no one else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
