"""ML_server.log rotates by size under two real gunicorn workers: no line lost or torn."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import aiohttp
import pytest

from testing.servers import Server, start_server, stop_server

pytestmark = pytest.mark.system
REQUESTS = 1_500
MAX_BYTES = 20_000
# Other log lines (startup, job runner) are written between request batches, unchecked.
OTHER_LINES_SLACK_BYTES = 4_096
REQUEST_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<pid>\d+) INFO fastml\.requests "
    r"GET /health/(live|ready) \d{3} \d+\.\d\dms user=- request_id=(?P<id>[0-9a-f]+)$"
)


async def fire(server: Server, request_ids: list[str]) -> list[int]:
    """Every request on its own connection, up to 32 at once, so both workers answer."""
    connector = aiohttp.TCPConnector(limit=32, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(request_id: str) -> int:
            headers = {"X-Request-ID": request_id}
            async with session.get(f"{server.url}/health/live", headers=headers) as answer:
                return answer.status

        return await asyncio.wait_for(
            asyncio.gather(*(one(request_id) for request_id in request_ids)), timeout=120
        )


def test_two_workers_rotate_the_log_without_losing_a_line(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, {"FASTML_LOG_MAX_BYTES": str(MAX_BYTES), "FASTML_LOG_BACKUP_COUNT": "100"}
    )
    request_ids = [uuid.uuid4().hex for _ in range(REQUESTS)]
    try:
        statuses = asyncio.run(fire(server, request_ids))
    finally:
        stop_server(server)  # each worker flushes its last batch on the way out
    assert statuses == [200] * REQUESTS

    files = sorted(tmp_path.glob("ML_server.log*"))
    logged: list[str] = []
    pids: set[str] = set()
    for path in files:
        assert path.stat().st_size <= MAX_BYTES + OTHER_LINES_SLACK_BYTES, path.name
        for line in path.read_text().splitlines():
            if "fastml.requests" not in line:
                continue
            match = REQUEST_LINE.match(line)
            assert match is not None, f"torn line in {path.name}: {line!r}"
            logged.append(match["id"])
            pids.add(match["pid"])
    sent = set(request_ids)
    ours = [request_id for request_id in logged if request_id in sent]  # not readiness probes
    assert sorted(ours) == sorted(request_ids)  # each request exactly once
    assert len(pids) == 2  # both workers wrote, and rotated, the same log
    assert len(files) >= 5, [path.name for path in files]
