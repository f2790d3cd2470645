"""A small tmpfs that a test mounts (as root) to fill a disk for real, and unmounts after."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK_BYTES = 64 * 1024
MAX_CHUNKS = 1_000_000


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a tmpfs of `size` on `directory`; skip (saying why) where that is impossible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {directory}: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        # Lazy, so a process of the test still holding a file open cannot keep it mounted.
        subprocess.run(["umount", "-l", str(directory)], check=False, timeout=30)


def fill_disk(directory: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file until the disk is full, then free `leave_bytes` of it."""
    filler = directory / "filler.bin"
    chunk = b"\0" * CHUNK_BYTES
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for _ in range(MAX_CHUNKS):
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        else:
            raise AssertionError(f"{directory} never filled up")
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(size - leave_bytes, 0))
    finally:
        os.close(fd)
    return filler
