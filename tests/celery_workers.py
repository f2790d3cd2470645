"""Real Celery workers for the system tests: `celery --app ML.tasks worker` in a subprocess,
prefork with one process, on the test's own Redis, sharing the server's model folder."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testing.servers import OWNED_ENV, PROJECT_DIR, stop_session_leader
from tests.system.fault_tools import children_of

READY_DEADLINE_SECONDS = 120.0  # a loaded machine imports scikit-learn slowly
READY_LINE = " ready."


@dataclass
class CeleryWorker:
    name: str
    process: subprocess.Popen[bytes]
    output_path: Path

    def output(self) -> str:
        with contextlib.suppress(OSError):
            return self.output_path.read_text(errors="replace")
        return ""

    def job_process(self, deadline_seconds: float = 60.0) -> int:
        """The prefork child that runs jobs (the worker's only pool process)."""
        deadline = time.monotonic() + deadline_seconds
        for _ in range(int(deadline_seconds / 0.1) + 1):
            children = children_of(self.process.pid)
            if children:
                return children[0]
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} has no pool process:\n{self.output()[-3000:]}")


def worker_env(work_dir: Path, broker_url: str, extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in OWNED_ENV}
    env.update(
        {
            "FASTML_BROKER_URL": broker_url,
            "FASTML_MODEL_DIR": str(work_dir / "models"),
            "FASTML_LOG_PATH": str(work_dir / "ML_server.log"),
        }
    )
    return {**env, **extra}


def start_worker(
    work_dir: Path, broker_url: str, extra_env: dict[str, str] | None = None, name: str = "w1"
) -> CeleryWorker:
    """The README's worker command; returns once the worker says it is ready."""
    celery = str(Path(sys.executable).parent / "celery")
    command = [
        celery,
        "--app",
        "ML.tasks",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--loglevel",
        "info",
        "--hostname",
        f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    output_path = work_dir / f"celery-{name}.out"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            env=worker_env(work_dir, broker_url, extra_env or {}),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = CeleryWorker(name, process, output_path)
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    for _ in range(int(READY_DEADLINE_SECONDS / 0.2) + 1):
        if READY_LINE in worker.output():
            return worker
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    stop_worker(worker)
    raise AssertionError(f"celery worker {name} did not start:\n{worker.output()[-3000:]}")


def stop_worker(worker: CeleryWorker) -> None:
    """Warm shutdown (SIGTERM); SIGKILL to its own process group past the deadline."""
    stop_session_leader(worker.process)


@contextlib.contextmanager
def running_worker(
    work_dir: Path, broker_url: str, extra_env: dict[str, str] | None = None, name: str = "w1"
) -> Iterator[CeleryWorker]:
    worker = start_worker(work_dir, broker_url, extra_env, name)
    try:
        yield worker
    finally:
        stop_worker(worker)
