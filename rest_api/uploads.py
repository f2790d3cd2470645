"""Uploaded CSV files: the form fields that carry them, and saving them to disk before a job
is accepted, so an accepted job is never lost."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ML.atomic_files import is_out_of_space
from ML.errors import StorageFull, StoreUnavailable
from ML.jobs import JobRecords
from ML.private_files import make_private_dir, open_new_private_file

logger = logging.getLogger(__name__)

# Form parsing limits for every upload route: one file, a few small fields.
UPLOAD_FORM_LIMITS: Any = {"max_files": 1, "max_fields": 16, "max_part_size": 64 * 1024}
# An upload younger than this may belong to a request between saving it and recording its
# job; the sweep at start leaves it alone.
STRAY_UPLOAD_MIN_AGE_SECONDS = 60.0

CsvFile = Annotated[UploadFile, File(description="CSV with a header row")]
TargetVariable = Annotated[str, Form(description="name of the column to predict")]


async def save_upload(upload: UploadFile, uploads_dir: Path) -> Path:
    """Copy the upload to `uploads_dir` and fsync it; returns the new file's path."""
    return await run_in_threadpool(_copy_synced, upload.file, uploads_dir)


def _copy_synced(source: BinaryIO, uploads_dir: Path) -> Path:
    if not uploads_dir.parent.is_dir():
        # A state folder that went away is not re-created empty.
        raise StoreUnavailable(
            f"the folder for uploads {uploads_dir.parent} is missing (moved or deleted?); "
            "put it back or restart the server"
        )
    path = make_private_dir(uploads_dir) / f"{uuid.uuid4()}.csv"
    source.seek(0)
    try:
        with open(open_new_private_file(path), "wb") as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
            target.flush()
            os.fsync(target.fileno())
    except BaseException as exc:
        path.unlink(missing_ok=True)  # never leave a partial file behind
        if isinstance(exc, OSError) and is_out_of_space(exc):
            raise StorageFull(
                f"the disk is full: no space left for the upload in {uploads_dir}; "
                "free space there (or send a smaller file) and try again"
            ) from exc
        raise
    return path


def remove_stray_uploads(uploads_dir: Path, jobs: JobRecords) -> int:
    """Delete uploads that no queued or running job owns (left by a crash or a full disk)."""
    in_use = jobs.upload_paths_in_use()
    cutoff = time.time() - STRAY_UPLOAD_MIN_AGE_SECONDS
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(uploads_dir):
            with contextlib.suppress(FileNotFoundError):
                if entry.path not in in_use and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        logger.warning("removed %d upload(s) of %s that no job owns", removed, uploads_dir)
    return removed
