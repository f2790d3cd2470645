"""The job database on a full disk or gone from under the server: domain errors, no new file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ML.errors import StorageFull, StoreUnavailable
from ML.jobs import JobStore, TrainingJobOptions
from tests.tmpfs import fill_disk, small_tmpfs

OPTIONS = TrainingJobOptions(target_variable="species", estimator="random_forest")


def test_a_job_process_never_creates_a_missing_database(tmp_path: Path) -> None:
    db_path = tmp_path / "state" / "jobs.sqlite3"

    with pytest.raises(StoreUnavailable, match="job database"):
        JobStore(db_path, create=False).list_recent(1)

    assert not (tmp_path / "state").exists()


def test_a_database_moved_away_is_unavailable_and_not_recreated(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "state" / "jobs.sqlite3")
    job = jobs.create("iris", OPTIONS, str(tmp_path / "upload.csv"), "server-a")
    (tmp_path / "state").rename(tmp_path / "moved")

    with pytest.raises(StoreUnavailable, match="cannot be used"):
        jobs.get(job.id)
    assert not (tmp_path / "state").exists()

    (tmp_path / "moved").rename(tmp_path / "state")
    assert jobs.get(job.id) == job


def test_a_full_disk_opens_lazily_and_says_no_space(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        fill_disk(disk)
        jobs = JobStore(disk / "jobs.sqlite3")  # a server starts: nothing touched yet

        with pytest.raises(StorageFull, match=f"no space left for the job database at {disk}"):
            jobs.list_recent(1)


def test_upload_paths_in_use_are_those_of_queued_and_running_jobs(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "jobs.sqlite3")
    queued = jobs.create("iris", OPTIONS, "/uploads/queued.csv", "a")
    running = jobs.create("iris", OPTIONS, "/uploads/running.csv", "a")
    jobs.claim(running.id, "a")
    failed = jobs.create("iris", OPTIONS, "/uploads/failed.csv", "a")
    jobs.fail(failed.id, "boom")

    assert jobs.upload_paths_in_use() == {queued.upload_path, running.upload_path}
