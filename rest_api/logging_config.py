"""Logging set up once, at the edge: every worker appends to the same ML_server.log."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.handlers
import os
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"


def configure_logging(log_path: Path, level: str = "info") -> None:
    """Attach one append-mode file handler to the root logger (idempotent per path) and set
    its level (FASTML_LOG_LEVEL).

    Append mode opens the file with O_APPEND, so lines from several workers interleave
    whole and nothing is ever truncated. The handler reopens the file once it has been
    rotated (by a worker's LogRotation or by logrotate), so no line goes to a moved file
    for long.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    resolved = str(log_path.resolve())
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == resolved:
            return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.WatchedFileHandler(resolved, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)


class LogRotation:
    """Size-based rotation of a log that several processes append to at once.

    `append` writes one batch under an exclusive flock on the log's folder: it reopens the
    file when another process (or logrotate) has moved it, fills the file with the batch's
    whole lines up to `max_bytes` (0: never rotate), rotates, and goes on with the rest.
    Check and write under one lock, so no worker appends to a file another just rotated or
    filled, and a file never passes its limit by our request lines (a batch holds 0.2 s of
    them, which under load can itself be over a small limit). Rotation renames, never
    truncates: log -> log.1 -> ... -> log.<backup_count>, the oldest dropped. One flock per
    batch (a few per second per worker) costs microseconds.
    """

    def __init__(self, log_path: Path, max_bytes: int, backup_count: int) -> None:
        self.log_path = log_path
        self.max_bytes = max_bytes
        self.backup_count = backup_count

    def append(self, fd: int | None, data: bytes) -> int:
        """Append `data` (whole lines) to the current log, rotating as often as it needs;
        returns the descriptor to pass next time."""
        with self._folder_lock():
            if fd is None or not self._is_current(fd):
                if fd is not None:
                    os.close(fd)
                fd = self._open()
            while True:
                size = os.fstat(fd).st_size
                if not self.max_bytes or size + len(data) <= self.max_bytes:
                    os.write(fd, data)
                    return fd
                # The whole lines that still fit; an empty file takes at least one line, so
                # a batch bigger than the limit spreads over several files and this ends.
                room = self.max_bytes - size
                cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
                if cut == 0 and size == 0:
                    cut = data.find(b"\n") + 1 or len(data)
                if cut:
                    os.write(fd, data[:cut])
                    data = data[cut:]
                    if not data:
                        return fd
                self._shift_backups()
                os.close(fd)
                fd = self._open()

    def _open(self) -> int:
        return os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _is_current(self, fd: int) -> bool:
        try:
            current = os.stat(self.log_path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)

    def _shift_backups(self) -> None:
        for number in range(self.backup_count - 1, 0, -1):
            older = self._backup_path(number)
            if older.exists():
                older.rename(self._backup_path(number + 1))
        self.log_path.rename(self._backup_path(1))

    def _backup_path(self, number: int) -> Path:
        return self.log_path.with_name(f"{self.log_path.name}.{number}")

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        # flock on the folder itself: no lock file to leave beside the log.
        folder_fd = os.open(self.log_path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder_fd)  # releases the lock
