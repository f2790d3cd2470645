"""Uploaded CSV files: the form fields that carry them, and saving them to disk before a job
is accepted, so an accepted job is never lost."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ML.private_files import make_private_dir, open_new_private_file

# Form parsing limits for every upload route: one file, a few small fields.
UPLOAD_FORM_LIMITS: Any = {"max_files": 1, "max_fields": 16, "max_part_size": 64 * 1024}

CsvFile = Annotated[UploadFile, File(description="CSV with a header row")]
TargetVariable = Annotated[str, Form(description="name of the column to predict")]


async def save_upload(upload: UploadFile, uploads_dir: Path) -> Path:
    """Copy the upload to `uploads_dir` and fsync it; returns the new file's path."""
    return await run_in_threadpool(_copy_synced, upload.file, uploads_dir)


def _copy_synced(source: BinaryIO, uploads_dir: Path) -> Path:
    path = make_private_dir(uploads_dir) / f"{uuid.uuid4()}.csv"
    source.seek(0)
    with open(open_new_private_file(path), "wb") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
        target.flush()
        os.fsync(target.fileno())
    return path
