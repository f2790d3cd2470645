"""Committing a job's trained version so that the job record and the model store never disagree.

A version is committed only by the job's current owner while the job is still running:

1. stage: every byte of the version is written but not published
   (`ModelStore.stage_version`). A full disk fails here, with nothing visible.
2. under the model's lock, compare-and-set the job record from "running for this owner"
   to "succeeded" (`JobStore.succeed_if_owner`). A job failed meanwhile (its server
   process died and a peer took over) refuses, and the staged files are discarded.
3. publish: renames only (metadata, then `current`), which need no free space.

Publishing after the record, rather than before it, means a crash can only leave a
succeeded job whose version is staged, never a failed job whose version is live; and
`recover_staged_versions`, run at every server start, rolls such a version forward (or
discards the staged version of a job that failed). Any executor (the embedded pool, a
Celery worker) commits through `commit_job_version` with the owner it claimed the job as.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ML.errors import JobNotFound
from ML.jobs import JobRecords, JobStatus
from ML.model_store import ModelStore, StagedVersion
from ML.signal_handlers import handlers_during

logger = logging.getLogger(__name__)

# Celery's soft time limit is SIGUSR1, whose handler raises (ML/tasks.py). Raised between
# the record and the renames, it would leave a succeeded job whose version is unpublished
# until the next start: it is held while they change together, and raised again just after.
HELD_WHILE_COMMITTING = {signal.SIGUSR1}


def commit_job_version(
    store: ModelStore,
    jobs: JobRecords,
    job_id: str,
    owner: str,
    pipeline: Any,
    metadata: dict[str, Any],
    *,
    model_name: str,
    promote: bool,
    result: dict[str, Any],
) -> dict[str, Any] | None:
    """Stage, record and publish; the job's result (with its version), or None when the job
    is no longer this owner's to finish (nothing was published)."""
    staged = store.stage_version(
        model_name, pipeline, {**metadata, "job_id": job_id}, promote=promote
    )
    recorded = {**result, "version": staged.version}
    with _signals_held():
        is_published = store.commit_staged(
            staged, lambda: jobs.succeed_if_owner(job_id, owner, recorded)
        )
    if is_published:
        return recorded
    logger.warning(
        "job %s is no longer running for %s; its version %d was discarded",
        job_id,
        owner,
        staged.version,
    )
    return None


@contextmanager
def _signals_held() -> Iterator[None]:
    """Record the held signals meanwhile; raise each again once the block is done."""
    arrived: set[int] = set()
    try:
        with handlers_during(
            {held: lambda signum, frame: arrived.add(signum) for held in HELD_WHILE_COMMITTING}
        ):
            yield
    finally:
        for signum in arrived:  # the previous handlers are back: they take it now
            signal.raise_signal(signum)


def recover_staged_versions(store: ModelStore, jobs: JobRecords) -> tuple[list[str], list[str]]:
    """Finish what stopped processes left staged: publish the versions of succeeded jobs,
    discard those of jobs that did not succeed. Returns (published, discarded) descriptions."""
    published: list[str] = []
    discarded: list[str] = []
    for staged in store.staged_versions():
        label = f"{staged.name} version {staged.version}"
        verdict = _verdict(staged, jobs)
        if verdict is None:
            continue  # its job still runs: the owner may be committing right now
        if verdict and store.commit_staged(staged, lambda: True, is_recovery=True):
            published.append(label)
        elif not verdict:
            store.discard_staged(staged)
            discarded.append(label)
    if published or discarded:
        logger.warning(
            "staged versions left by stopped processes: published %s, discarded %s",
            published,
            discarded,
        )
    return published, discarded


def _verdict(staged: StagedVersion, jobs: JobRecords) -> bool | None:
    """True: publish; False: discard; None: leave it to the job's owner."""
    job_id = staged.metadata.get("job_id")
    if not isinstance(job_id, str):
        return False  # a save_version call that stopped half-way: nobody will commit it
    try:
        job = jobs.get(job_id)
    except JobNotFound:
        return False
    if not job.status.is_terminal:
        return None
    result = job.result or {}
    return job.status is JobStatus.SUCCEEDED and result.get("version") == staged.version
