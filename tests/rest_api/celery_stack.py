"""The Celery mode for the API tests: one private redis-server and one real Celery worker per
test module, wiped back to nothing between tests so each test starts as on a fresh server."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from ML.config import Settings
from ML.tasks import QUEUE
from tests.celery_workers import CeleryWorker, running_worker
from tests.conftest import make_settings
from tests.redis_fixture import RedisServer, delete_prefixed, running_redis

# The slowest job a test leaves behind (a few hundred trees on 20,000 rows) on a loaded
# machine; below pytest's timeout per test, so a stuck worker fails with its output.
IDLE_DEADLINE_SECONDS = 120.0
IDLE_POLL_SECONDS = 0.1
# Where kombu's Redis transport keeps the messages a worker has taken and not acknowledged.
UNACKED_KEY = "unacked"


@dataclass
class CeleryStack:
    """A worker whose model folder is `work_dir/models`, and the Redis it takes jobs from."""

    work_dir: Path
    redis: RedisServer
    worker: CeleryWorker

    def settings(self, users_file: Path) -> Settings:
        """The API's settings on this stack: the worker's model folder, jobs on its Redis."""
        base = make_settings(self.work_dir, users_file)
        return base.model_copy(update={"broker_url": self.redis.url})

    def reset(self, settings: Settings) -> None:
        """Back to a fresh server: wait until the worker has nothing queued or running, then
        delete the job records and login counters (this stack's Redis, written only by the
        tests) and the model folder. Celery's own keys stay: the worker is bound to them."""
        self.wait_until_idle()
        delete_prefixed(self.redis.url, settings.redis_key_prefix)
        shutil.rmtree(settings.model_dir, ignore_errors=True)

    def wait_until_idle(self) -> None:
        client = redis.Redis.from_url(self.redis.url, socket_timeout=5)
        try:
            deadline = time.monotonic() + IDLE_DEADLINE_SECONDS
            for _ in range(int(IDLE_DEADLINE_SECONDS / IDLE_POLL_SECONDS) + 1):
                if client.llen(QUEUE) == 0 and client.hlen(UNACKED_KEY) == 0:
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(IDLE_POLL_SECONDS)
        finally:
            client.close()
        raise AssertionError(
            f"the Celery worker still has jobs after {IDLE_DEADLINE_SECONDS:.0f} s:\n"
            f"{self.worker.output()[-3000:]}"
        )


@contextlib.contextmanager
def running_celery_stack(work_dir: Path) -> Iterator[CeleryStack]:
    with running_redis(work_dir / "redis") as server, running_worker(work_dir, server.url) as w:
        yield CeleryStack(work_dir, server, w)
