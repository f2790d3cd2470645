"""SQLite habits shared by the job store and the login counters."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Below this much free space a disk counts as full (SQLite needs a few pages and its WAL).
FULL_DISK_BYTES = 1024 * 1024


def is_disk_full(directory: Path) -> bool:
    """Whether the disk of `directory` has less than FULL_DISK_BYTES free. On a full disk
    SQLite may say "disk I/O error" (it cannot make its WAL files) rather than "full"."""
    try:
        return shutil.disk_usage(directory).free < FULL_DISK_BYTES
    except OSError:
        return False  # a missing folder is not a full disk


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction taken up front (on an autocommit connection), so read-then-write
    steps of several processes cannot interleave."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
