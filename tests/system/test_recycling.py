"""Workers recycled by --max-requests under load drop no request (issue 13, point 4)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ML.config import PROJECT_DIR
from tests.system.conftest import Server, start_server, stop_server
from tests.system.test_load_client import run_client
from tests.system.test_tour import train

pytestmark = pytest.mark.system

MAX_REQUESTS = 200
JITTER = 50
REQUESTS = 3000


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
        train(client, PROJECT_DIR / "ML" / "data" / "train.csv")
    code, report = run_client(
        recycling_server, tmp_path, str(REQUESTS), "--concurrency", "32", "--timeout", "60"
    )
    output = recycling_server.output_path.read_text()
    recycled = len(re.findall(r"Maximum request limit of \d+ exceeded", output))
    # 3,000 requests over two workers recycling every 200-250: at least 10 recycles.
    assert recycled >= REQUESTS // (MAX_REQUESTS + JITTER) - 2, output[-3000:]
    assert report["client_errors"] == {}, report
    assert report["statuses"] == {"200": REQUESTS}, report
    assert code == 0, report
