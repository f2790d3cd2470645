"""The edge's request line: the fields in the order and format the log has always had."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

from rest_api.logging_config import LOG_FORMAT
from rest_api.request_log import RequestLogWriter

HEAD = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\d+) INFO fastml\.requests "


async def _write_lines(writer: RequestLogWriter) -> None:
    writer.write_request("POST", "/models/iris/predict", 200, 1.23456, "admin", "a1b2c3")
    writer.write_request("GET", "/health/live", 404, 0.004999, "-", "id-2")
    writer.write("a message of its own")
    writer.close()


def test_request_lines_read_as_the_logging_modules(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    asyncio.run(_write_lines(RequestLogWriter(log_path)))
    lines = log_path.read_text().splitlines()
    assert [re.sub(f"^{HEAD}", "", line) for line in lines] == [
        "POST /models/iris/predict 200 1.23ms user=admin request_id=a1b2c3",
        "GET /health/live 404 0.00ms user=- request_id=id-2",
        "a message of its own",
    ]
    for line in lines:
        match = re.match(HEAD, line)
        assert match is not None and int(match.group(1)) == os.getpid()
    # The head is what logging's own formatter writes for the other loggers of the file.
    record = logging.LogRecord("fastml.requests", logging.INFO, "", 0, "m", None, None)
    formatted = logging.Formatter(LOG_FORMAT).format(record)
    assert re.fullmatch(f"{HEAD}m", formatted) is not None
