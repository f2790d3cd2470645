"""Redis for the tests (SPEC 8): FASTML_TEST_REDIS_URL, else 127.0.0.1:6379 when it answers,
else a private `redis-server` from PATH on a free port. FASTML_REQUIRE_REDIS=1 (CI) turns
every "no Redis here" skip into a failure. Tests never flush a database: each writes under
a key prefix of its own and deletes only those keys.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from testing.servers import free_port

DEFAULT_URL = "redis://127.0.0.1:6379/0"
START_DEADLINE_SECONDS = 10.0
STOP_DEADLINE_SECONDS = 10.0


def no_redis(reason: str) -> None:
    """Skip the test, or fail it where Redis is required (CI)."""
    if os.environ.get("FASTML_REQUIRE_REDIS") == "1":
        pytest.fail(f"Redis is required (FASTML_REQUIRE_REDIS=1): {reason}")
    pytest.skip(reason)


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer:
    """A private redis-server on a free 127.0.0.1 port, in a folder of its own.

    `append_only=True` keeps every write in an append-only file fsynced at each write,
    so a test can stop it (even with SIGKILL) and start it again with its data, on the
    same port: what a restart of the operator's Redis looks like to fastml.
    """

    def __init__(self, data_dir: Path, *, append_only: bool = False) -> None:
        self.data_dir = data_dir
        self.append_only = append_only
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            no_redis("no Redis answers and redis-server is not on PATH (apt-get install redis)")
            return
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.append_only
            else ["--appendonly", "no"]
        )
        command = [
            executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            *persistence,
        ]
        log = (self.data_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        for _ in range(int(START_DEADLINE_SECONDS / 0.05) + 1):
            if self.process.poll() is not None:
                break
            if answers(self.url):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.stop(kill=True)
        log_text = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log_text}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (Redis saves nothing: --save "") or SIGKILL; only our own process."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_DEADLINE_SECONDS)


@contextlib.contextmanager
def running_redis(data_dir: Path, *, append_only: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(data_dir, append_only=append_only)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def shared_redis_url(tmp_root: Path) -> Iterator[str]:
    """The session's Redis: FASTML_TEST_REDIS_URL, the local default, or a private server."""
    configured = os.environ.get("FASTML_TEST_REDIS_URL")
    if configured:
        if not answers(configured):
            no_redis(f"FASTML_TEST_REDIS_URL={configured} does not answer")
        yield configured
        return
    if answers(DEFAULT_URL):
        yield DEFAULT_URL
        return
    with running_redis(tmp_root) as server:
        yield server.url


def unique_prefix() -> str:
    return f"fastml-test:{uuid.uuid4().hex[:12]}:"


def delete_prefixed(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (this test's own), never anything else."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
