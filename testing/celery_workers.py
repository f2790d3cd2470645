"""Real Celery workers: the README's `celery --app ML.tasks worker` in a subprocess, prefork,
on a given Redis, sharing a model folder with the API replicas (tests and the topology)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testing.servers import OWNED_ENV, PROJECT_DIR, ServerError, stop_session_leader

READY_DEADLINE_SECONDS = 120.0  # a loaded machine imports scikit-learn slowly
READY_LINE = " ready."


@dataclass
class CeleryWorker:
    """A worker's main process (a session leader: its pool processes are in its group)."""

    name: str
    process: subprocess.Popen[bytes]
    output_path: Path

    def output(self) -> str:
        with contextlib.suppress(OSError):
            return self.output_path.read_text(errors="replace")
        return ""


def worker_env(
    work_dir: Path, broker_url: str, extra: dict[str, str], model_dir: Path | None = None
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in OWNED_ENV}
    env.update(
        {
            "FASTML_BROKER_URL": broker_url,
            "FASTML_MODEL_DIR": str(model_dir or work_dir / "models"),
            "FASTML_LOG_PATH": str(work_dir / "ML_server.log"),
        }
    )
    return {**env, **extra}


def start_worker(
    work_dir: Path,
    broker_url: str,
    extra_env: dict[str, str] | None = None,
    name: str = "w1",
    model_dir: Path | None = None,
) -> CeleryWorker:
    """The README's worker command with one pool process; returns once the worker says it
    is ready. `model_dir` defaults to `work_dir/models`."""
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
    work_dir.mkdir(parents=True, exist_ok=True)
    output_path = work_dir / f"celery-{name}.out"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            env=worker_env(work_dir, broker_url, extra_env or {}, model_dir),
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
    raise ServerError(f"celery worker {name} did not start:\n{worker.output()[-3000:]}")


def stop_worker(worker: CeleryWorker) -> None:
    """Warm shutdown (SIGTERM); SIGKILL to its own process group past the deadline."""
    stop_session_leader(worker.process)
