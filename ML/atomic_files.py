"""Durable file-system steps shared by the model store and the secret key."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new directory entry durable; skipped where the file system
    cannot fsync a directory."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def is_out_of_space(error: OSError) -> bool:
    """True for a write refused because the disk (or the user's quota) is full."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temp file in the same directory, fsync, then rename over `path`."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_dir(path.parent)
