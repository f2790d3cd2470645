"""The request log: lines batched into ML_server.log, a write per batch, not per request."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from rest_api.logging_config import LogRotation

logger = logging.getLogger(__name__)
FLUSH_SECONDS = 0.2
# The head of every line as logging_config.LOG_FORMAT writes it: time, milliseconds, pid.
LINE_HEAD = "%s,%03d %d INFO fastml.requests "
MESSAGE_LINE = LINE_HEAD + "%s\n"
REQUEST_LINE = LINE_HEAD + "%s %s %d %.2fms user=%s request_id=%s\n"


class RequestLogWriter:
    """Appends request lines to the shared log, a batch per write, not a write per request.

    Lines are formatted like the logging module's (see logging_config.LOG_FORMAT) and land
    within FLUSH_SECONDS. O_APPEND makes each batch land whole, so lines of several workers
    interleave but never tear. Costs a few microseconds per request instead of ~30 for a
    logging call with a file flush. Before each batch, `rotation` reopens a file another
    worker rotated and rotates one that the batch would take past its size limit.
    """

    def __init__(self, log_path: Path, max_bytes: int = 0, backup_count: int = 1) -> None:
        self._rotation = LogRotation(log_path, max_bytes, backup_count)
        self._fd: int | None = None
        self._pid = 0
        self._lines: list[str] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._second = -1
        self._second_text = ""

    def write(self, message: str) -> None:
        self._append(MESSAGE_LINE, message)

    def write_request(
        self, method: str, path: str, status: int, elapsed_ms: float, user: str, request_id: str
    ) -> None:
        """`write` of `METHOD path status 1.23ms user=name request_id=id`, the edge's line,
        formatted in the same one operation as the line's head."""
        self._append(REQUEST_LINE, method, path, status, elapsed_ms, user, request_id)

    def _append(self, line_format: str, *fields: object) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        if self._pid != os.getpid():  # a forked worker: open its own descriptor
            self._pid = os.getpid()
            self._fd = None
        millis = int((now - second) * 1000)
        self._lines.append(line_format % (self._second_text, millis, self._pid, *fields))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "replace")
        self._lines.clear()
        try:
            self._fd = self._rotation.append(self._fd, data)
        except OSError as error:  # a full disk must not fail requests; say it once per batch
            logger.warning("could not write %d bytes of request log: %s", len(data), error)

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
