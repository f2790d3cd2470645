"""Batch-prediction jobs: predicting an uploaded CSV into a private result file, the checks made
before such a job is queued, and reading, deleting and expiring result files.

The result file holds exactly what `POST /models/{name}/predict/csv` answers for the same
upload (the same writer, `ML.prediction.write_predictions_csv`), written chunk by chunk in
bounded memory to a 0600 temp file that is renamed into place, so a result file is always
whole. The job commits like a training job: only while it is still running for its owner
(`JobStore.succeed_if_owner`), so a job failed meanwhile never ends succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

from ML.atomic_files import atomic_write, is_out_of_space
from ML.config import Settings
from ML.errors import JobConflict, JobNotFound, JobResultUnavailable, StorageFull
from ML.job_runner import delete_upload, job_upload, run_claimed
from ML.jobs import JobKind, JobRecord, JobRecords, JobStatus, PredictionJobOptions
from ML.prediction import ServedModel, predicted_csv_chunks, write_predictions_csv
from ML.private_files import make_private_dir

logger = logging.getLogger(__name__)

RESULT_SUFFIX = ".csv"
# atomic_write's temp files: ".{job id}.csv.{random}.tmp" while a job writes.
PARTIAL_SUFFIX = ".tmp"
# Rows predicted at submit time, so a wrong header or bad first rows fail the request itself.
START_CHECK_ROWS = 100


class _NoLongerOwner(Exception):
    """The job stopped being this owner's (a peer failed it): stop writing, commit nothing."""


def run_prediction_job(
    job_id: str, settings: Settings | None = None, owner: str | None = None
) -> dict[str, Any] | None:
    """Predict one queued batch-prediction job's upload into its result file and record it;
    None when the job was not queued any more or stopped being `owner`'s (no result kept)."""
    return run_claimed(job_id, settings or Settings(), owner, _predict)


def check_prediction_csv_start(
    model: ServedModel, source: BinaryIO | Path, *, with_probabilities: bool
) -> None:
    """Predict the first rows of an upload the way the job will: a header that does not fit
    the model, a clash with the added columns, proba=true on a model without probabilities
    or a bad value early in the file fail here, before a job is queued. Rewinds a file object."""
    start = source.tell() if not isinstance(source, Path) else 0
    chunks = predicted_csv_chunks(
        model, source, with_probabilities=with_probabilities, chunk_rows=START_CHECK_ROWS
    )
    with contextlib.closing(chunks):
        next(chunks, None)
    if not isinstance(source, Path):
        source.seek(start)


def result_path(results_dir: Path, job_id: str) -> Path:
    return results_dir / f"{job_id}{RESULT_SUFFIX}"


def open_result(settings: Settings, job: JobRecord) -> BinaryIO:
    """The job's result file, opened; JobResultUnavailable (not ready, deleted, or not a
    batch-prediction job) or JobConflict (failed or cancelled: there will never be one)."""
    if job.kind is not JobKind.PREDICT:
        raise JobResultUnavailable(
            f"job {job.id} is a {job.kind.value} job: it has no result file; "
            f"its model is at /models/{job.model_name}"
        )
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        reason = f": {job.error}" if job.error else ""
        raise JobConflict(f"job {job.id} {job.status.value}, so it has no result{reason}")
    if job.status is not JobStatus.SUCCEEDED:
        done = f", {job.rows_done} rows done" if job.rows_done is not None else ""
        raise JobResultUnavailable(
            f"the result of job {job.id} is not ready: the job is {job.status.value}{done}; "
            f"ask again when GET /jobs/{job.id} says succeeded"
        )
    try:
        return result_path(settings.results_dir, job.id).open("rb")
    except FileNotFoundError:
        raise JobResultUnavailable(
            f"the result of job {job.id} was deleted (by DELETE /jobs/{job.id}, or "
            f"{settings.prediction_result_hours:g} hours after the job finished); "
            "submit the job again"
        ) from None


def delete_result(settings: Settings, job_id: str) -> bool:
    """Delete a job's result file; True if there was one."""
    try:
        result_path(settings.results_dir, job_id).unlink()
    except FileNotFoundError:
        return False
    logger.info("job %s: result file deleted", job_id)
    return True


def remove_expired_results(results_dir: Path, jobs: JobRecords, max_age_seconds: float) -> int:
    """Delete result files older than `max_age_seconds`, and temp files that no running job
    writes any more (left by a process that died); returns how many were deleted."""
    cutoff = time.time() - max_age_seconds
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(results_dir):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime >= cutoff:
                    continue
                if entry.name.endswith(PARTIAL_SUFFIX) and _is_running(entry.name, jobs):
                    continue
                os.unlink(entry.path)
                removed += 1
    if removed:
        logger.info("removed %d expired batch-prediction result file(s)", removed)
    return removed


def _is_running(partial_name: str, jobs: JobRecords) -> bool:
    job_id = partial_name.removeprefix(".").split(".", 1)[0]
    try:
        return jobs.get(job_id).status is JobStatus.RUNNING
    except JobNotFound:
        return False


def _predict(
    job: JobRecord, settings: Settings, jobs: JobRecords, owner: str
) -> dict[str, Any] | None:
    from threadpoolctl import threadpool_limits

    options = job.options_as(PredictionJobOptions)
    store = settings.open_model_store(create=False)
    upload_path = job_upload(job, store)
    model = ServedModel(store.load_version(job.model_name, options.version))
    jobs.set_rows_done(job.id, owner, 0)

    def report(rows: int) -> None:
        if not jobs.set_rows_done(job.id, owner, rows):
            raise _NoLongerOwner

    rows = 0

    def write(target: IO[bytes]) -> None:
        nonlocal rows
        rows = write_predictions_csv(
            model,
            upload_path,
            target,
            with_probabilities=options.with_probabilities,
            chunk_rows=settings.csv_chunk_rows,
            on_chunk=report,
        )

    results_dir = make_private_dir(settings.results_dir)
    path = result_path(results_dir, job.id)
    try:
        with threadpool_limits(limits=1):
            atomic_write(path, write)  # a 0600 temp file, renamed when whole
    except _NoLongerOwner:
        logger.warning("job %s is no longer running for %s; stopped predicting", job.id, owner)
        return None
    except OSError as exc:
        if is_out_of_space(exc):
            raise StorageFull(
                f"no space left for the result of job {job.id} in {results_dir}; "
                "free space there and submit the job again"
            ) from exc
        raise
    delete_upload(job.upload_path)  # before the commit turns the record terminal
    expires_at = datetime.now(UTC) + timedelta(hours=settings.prediction_result_hours)
    result = {
        "version": options.version,
        "rows": rows,
        "expires_at": expires_at.isoformat(timespec="seconds"),
    }
    if not jobs.succeed_if_owner(job.id, owner, result):
        path.unlink(missing_ok=True)
        logger.warning(
            "job %s is no longer running for %s; its result was discarded", job.id, owner
        )
        return None
    logger.info(
        "job %s succeeded: %d rows predicted by model %r version %d; peak memory %d MiB",
        job.id,
        rows,
        job.model_name,
        options.version,
        _peak_memory_mib(),
    )
    return result


def _peak_memory_mib() -> int:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
