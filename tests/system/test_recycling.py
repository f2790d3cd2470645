"""Workers recycled by --max-requests under load drop no request (issue 13, point 4)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ML.config import PROJECT_DIR
from testing.fastml_api import train
from testing.servers import Server, start_server, stop_server
from tests.system.test_load_client import run_as_admin

pytestmark = pytest.mark.system

MAX_REQUESTS = 200
JITTER = 50
REQUESTS = 3000
BOOT_DEADLINE_SECONDS = 60


@pytest.fixture
def recycling_server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(
        tmp_path,
        {
            "FASTML_MAX_REQUESTS": str(MAX_REQUESTS),
            "FASTML_MAX_REQUESTS_JITTER": str(JITTER),
        },
    )
    try:
        yield running
    finally:
        stop_server(running)


def test_recycling_workers_answer_every_request(recycling_server: Server, tmp_path: Path) -> None:
    with recycling_server.client() as client:
        train(client, "iris", PROJECT_DIR / "ML" / "data" / "train.csv")
    code, report = run_as_admin(
        recycling_server, tmp_path, str(REQUESTS), "--concurrency", "32", "--timeout", "60"
    )
    output = recycling_server.output_path.read_text()
    recycled = len(re.findall(r"Maximum request limit of \d+ exceeded", output))
    latency = report["latency_ms"]
    print(
        f"\n{recycled} recycles, {report['answers']} answers {report['statuses']}, "
        f"errors {report['client_errors']}, {report['wall_seconds']:.1f} s, "
        f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms"
    )
    # 3,000 requests, two workers recycling every 200-250: about 12 recycles; at least half.
    assert recycled >= REQUESTS // (MAX_REQUESTS + JITTER) // 2, output[-3000:]
    assert report["client_errors"] == {}, report
    assert report["statuses"] == {"200": REQUESTS}, report
    assert code == 0, report


def test_a_worker_that_exits_is_replaced_and_serving_within_seconds(tmp_path: Path) -> None:
    """Worker boot time, printed (`-s`) for docs/benchmarks.md: one worker, SIGTERM it, time
    from its exit until the server answers again."""
    server = start_server(tmp_path, {"FASTML_WORKERS": "1"})
    boots = []
    try:
        for _ in range(3):
            children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
            worker = int(children.read_text().split()[0])
            os.kill(worker, signal.SIGTERM)
            deadline = time.monotonic() + BOOT_DEADLINE_SECONDS
            for _ in range(10_000):
                if not is_running(worker) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            exited = time.monotonic()
            for _ in range(10_000):
                if answers(server) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert answers(server), "no worker came back"
            boots.append(time.monotonic() - exited)
    finally:
        stop_server(server)
    print(f"\nworker boot seconds: {[round(b, 2) for b in boots]}")


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def answers(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/health/live", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
