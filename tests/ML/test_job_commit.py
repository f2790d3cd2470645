"""The commit guard: a job's version is published only while its owner still runs it."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ML.job_commit import commit_job_version, recover_staged_versions
from ML.jobs import ORPHAN_ERROR, JobStatus, JobStore, TrainingJobOptions
from ML.model_store import ModelStore

KEY = b"k" * 32
OWNER = "server-a"
OPTIONS = TrainingJobOptions(target_variable="species", estimator="logistic_regression")


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", KEY)


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "state" / "jobs.sqlite3")


@pytest.fixture
def pipeline() -> LogisticRegression:
    return LogisticRegression().fit(np.array([[0.0], [1.0], [0.1], [0.9]]), ["a", "b", "a", "b"])


def running_job(jobs: JobStore, owner: str = OWNER) -> str:
    job = jobs.create("iris", OPTIONS, "/nowhere.csv", owner)
    assert jobs.claim(job.id, owner)
    return job.id


def commit(
    store: ModelStore, jobs: JobStore, job_id: str, pipeline: object, owner: str = OWNER
) -> dict[str, object] | None:
    return commit_job_version(
        store,
        jobs,
        job_id,
        owner,
        pipeline,
        {"metrics": {"accuracy": 1.0}},
        model_name="iris",
        promote=True,
        result={"promoted": True},
    )


def test_the_owner_of_a_running_job_commits_its_version(
    store: ModelStore, jobs: JobStore, pipeline: LogisticRegression
) -> None:
    job_id = running_job(jobs)

    result = commit(store, jobs, job_id, pipeline)

    assert result == {"promoted": True, "version": 1}
    job = jobs.get(job_id)
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, result)
    assert store.current_version("iris") == 1
    assert store.get_version("iris", 1).metadata["job_id"] == job_id


def test_a_job_failed_meanwhile_publishes_nothing(
    store: ModelStore, jobs: JobStore, pipeline: LogisticRegression
) -> None:
    store.save_version("iris", pipeline, {})
    job_id = running_job(jobs)
    jobs.recover_orphans(stale_after_seconds=-1, new_owner="server-b")  # its server "died"
    assert jobs.get(job_id).error == ORPHAN_ERROR

    assert commit(store, jobs, job_id, pipeline) is None

    assert jobs.get(job_id).status is JobStatus.FAILED
    assert [v.version for v in store.get_model("iris").versions] == [1]
    assert store.current_version("iris") == 1
    assert store.staged_versions() == []


def test_only_the_owner_that_claimed_the_job_may_commit(
    store: ModelStore, jobs: JobStore, pipeline: LogisticRegression
) -> None:
    job_id = running_job(jobs, owner="server-b")

    assert commit(store, jobs, job_id, pipeline, owner=OWNER) is None

    assert jobs.get(job_id).status is JobStatus.RUNNING
    assert store.list_models() == []


def test_recovery_rolls_forward_succeeded_jobs_and_discards_the_rest(
    store: ModelStore, jobs: JobStore, pipeline: LogisticRegression
) -> None:
    # A crash after the record said succeeded, before the renames that publish.
    succeeded = running_job(jobs)
    staged = store.stage_version("iris", pipeline, {"job_id": succeeded}, promote=True)
    assert jobs.succeed_if_owner(succeeded, OWNER, {"version": staged.version})
    # A crash before the record changed; the job was then failed by orphan recovery.
    failed = running_job(jobs)
    store.stage_version("iris", pipeline, {"job_id": failed}, promote=True)
    jobs.fail(failed, ORPHAN_ERROR)
    # A job still running: its owner may be committing right now.
    running = running_job(jobs)
    store.stage_version("iris", pipeline, {"job_id": running}, promote=True)

    published, discarded = recover_staged_versions(store, jobs)

    assert (published, discarded) == (["iris version 1"], ["iris version 2"])
    assert [v.version for v in store.get_model("iris").versions] == [1]
    assert store.current_version("iris") == 1
    assert [s.metadata["job_id"] for s in store.staged_versions()] == [running]


class TimeLimitAfterTheRecord(JobStore):
    """Celery's soft time limit (SIGUSR1) arriving just after the job is recorded succeeded."""

    def succeed_if_owner(self, job_id: str, owner: str, result: dict[str, Any]) -> bool:
        recorded = super().succeed_if_owner(job_id, owner, result)
        os.kill(os.getpid(), signal.SIGUSR1)
        return recorded


class SoftTimeLimit(Exception):
    pass


def test_a_time_limit_during_the_commit_is_raised_once_the_version_is_published(
    store: ModelStore, tmp_path: Path, pipeline: LogisticRegression
) -> None:
    jobs = TimeLimitAfterTheRecord(tmp_path / "state" / "jobs.sqlite3")
    job_id = running_job(jobs)

    def stop(signum: int, frame: object) -> None:
        raise SoftTimeLimit

    previous = signal.signal(signal.SIGUSR1, stop)
    try:
        with pytest.raises(SoftTimeLimit):
            commit(store, jobs, job_id, pipeline)
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert jobs.get(job_id).status is JobStatus.SUCCEEDED
    assert store.staged_versions() == []
    assert store.current_version("iris") == 1
    assert [v.version for v in store.get_model("iris").versions] == [1]


def test_a_reader_that_saw_the_job_succeed_finds_its_version_current(
    store: ModelStore, jobs: JobStore, pipeline: LogisticRegression
) -> None:
    """The record turns succeeded under the model's lock, just before the renames that
    publish: a reader asking for the current version then waits for them, not a 404."""
    job_id = running_job(jobs)
    staged = store.stage_version("iris", pipeline, {"job_id": job_id}, promote=True)
    recorded, release = threading.Event(), threading.Event()

    def record_then_pause() -> bool:
        assert jobs.succeed_if_owner(job_id, OWNER, {"version": staged.version})
        recorded.set()
        return release.wait(timeout=60)

    committer = threading.Thread(target=store.commit_staged, args=(staged, record_then_pause))
    committer.start()
    assert recorded.wait(timeout=60)
    assert jobs.get(job_id).status is JobStatus.SUCCEEDED
    seen: list[int | Exception | None] = []

    def read_current() -> None:
        try:
            seen.append(store.current_version("iris"))
        except Exception as exc:
            seen.append(exc)

    reader = threading.Thread(target=read_current)
    reader.start()
    reader.join(timeout=0.5)  # without the wait it has answered "not found" by now
    release.set()
    for thread in (committer, reader):
        thread.join(timeout=60)
    assert seen == [staged.version]
