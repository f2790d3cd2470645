"""Durable file-system steps shared by the model store and the secret key."""

from __future__ import annotations

import errno
import os
from pathlib import Path


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
