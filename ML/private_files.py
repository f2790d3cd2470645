"""State files only the server's user may read: 0700 folders, 0600 files, whatever the umask."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from ML.atomic_files import fsync_dir

logger = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# SQLite creates these beside a database, with the database file's mode.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private_dir(directory: Path) -> Path:
    """Create `directory` and any missing parents as 0700; tighten it if it exists looser.

    Existing parents are left alone: they may be a shared volume or a home directory.
    """
    missing = [directory, *directory.parents]
    missing = [path for path in missing if not path.exists()]
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another worker may create it first
            path.mkdir(mode=PRIVATE_DIR_MODE)
    _tighten(directory, PRIVATE_DIR_MODE)
    return directory


def make_private_database(db_path: Path) -> Path:
    """Prepare a SQLite file as 0600 in a 0700 folder before SQLite opens it.

    SQLite gives its WAL and shared-memory files the database file's mode, so creating the
    database 0600 first keeps every file of it private.
    """
    make_private_dir(db_path.parent)
    os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
    for path in [db_path, *(db_path.with_name(db_path.name + s) for s in _SQLITE_SIDE_FILES)]:
        with contextlib.suppress(FileNotFoundError):
            _tighten(path, PRIVATE_FILE_MODE)
    return db_path


def open_new_private_file(path: Path) -> int:
    """A descriptor of a new file (0600) at `path`; FileExistsError if it exists."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)


def write_private_file(path: Path, text: str) -> bool:
    """Create `path` (mode 0600) holding `text` unless it exists; True if this call created it.

    The content is complete before the name appears: it is written to a private temp file,
    then hard-linked to `path`, which fails if another process got there first.
    """
    if path.exists():
        return False
    make_private_dir(path.parent)
    # mkstemp creates the file with mode 0600 whatever the umask.
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as temp_file:
            temp_file.write(text)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        try:
            os.link(temp_name, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)


def _tighten(path: Path, mode: int) -> None:
    """Drop permission bits beyond `mode` from a path this user owns; warn about others'."""
    status = path.stat()
    current = stat.S_IMODE(status.st_mode)
    if not current & ~mode:
        return
    if status.st_uid == os.geteuid():
        os.chmod(path, current & mode)
        logger.info("tightened %s from mode %o to %o", path, current, current & mode)
    else:
        logger.warning(
            "%s has mode %o and belongs to another user; other users can read it: "
            "run chmod %o %s as its owner",
            path,
            current,
            mode,
            path,
        )
