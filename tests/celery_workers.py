"""Celery workers for the tests (testing/celery_workers.py): one per `with`, and the pool
process that runs a worker's jobs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from testing.celery_workers import CeleryWorker, start_worker, stop_worker
from tests.system.fault_tools import children_of


def job_process(worker: CeleryWorker, deadline_seconds: float = 60.0) -> int:
    """The prefork child that runs jobs (the worker's only pool process)."""
    deadline = time.monotonic() + deadline_seconds
    for _ in range(int(deadline_seconds / 0.1) + 1):
        children = children_of(worker.process.pid)
        if children:
            return children[0]
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"worker {worker.name} has no pool process:\n{worker.output()[-3000:]}")


@contextlib.contextmanager
def running_worker(
    work_dir: Path, broker_url: str, extra_env: dict[str, str] | None = None, name: str = "w1"
) -> Iterator[CeleryWorker]:
    worker = start_worker(work_dir, broker_url, extra_env, name)
    try:
        yield worker
    finally:
        stop_worker(worker)
