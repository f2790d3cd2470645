"""Training jobs through the embedded runner: real spawned processes, real SQLite, tiny CSVs."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ML.config import Settings
from ML.datasets import read_labelled_csv
from ML.errors import InvalidDataset
from ML.job_runner import BROKEN_POOL_ERROR, EmbeddedJobRunner, run_training_job
from ML.jobs import ORPHAN_ERROR, JobRecord, JobStatus, JobStore, TrainingJobOptions

JOB_DEADLINE_SECONDS = 60.0
POLL_SECONDS = 0.02


def make_options(**changes: Any) -> TrainingJobOptions:
    options = TrainingJobOptions(
        target_variable="species",
        estimator="random_forest",
        params={"n_estimators": 5},
        test_size=0.25,
        filename="train.csv",
    )
    return dataclasses.replace(options, **changes)


def two_class_csv(rows: int = 30) -> str:
    lines = ["length,width,colour,species"]
    for i in range(rows):
        species = "setosa" if i % 2 else "versicolor"
        lines.append(
            f"{i % 7 + (5 if i % 2 else 0)},{i % 3}.5,{'red' if i % 2 else 'blue'},{species}"
        )
    return "\n".join(lines) + "\n"


def noisy_csv(rows: int) -> str:
    """Labels unrelated to the features: trees grow deep, so training takes a while."""
    generator = random.Random(0)
    lines = ["a,b,c,d,species"]
    for _ in range(rows):
        values = ",".join(f"{generator.random():.6f}" for _ in range(4))
        lines.append(f"{values},{generator.choice(['x', 'y'])}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        model_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        secret_key=SecretStr("test-secret-key-of-32-characters"),
        training_processes=1,
    )


@pytest.fixture
def jobs(settings: Settings) -> JobStore:
    return JobStore(settings.jobs_db_path)


@pytest.fixture
def runner(settings: Settings, jobs: JobStore) -> Iterator[EmbeddedJobRunner]:
    job_runner = EmbeddedJobRunner(settings, jobs)
    job_runner.start()
    try:
        yield job_runner
    finally:
        job_runner.shutdown()


def save_upload(settings: Settings, text: str) -> str:
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    path = settings.uploads_dir / f"{uuid.uuid4()}.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def queue_job(
    settings: Settings,
    jobs: JobStore,
    owner: str,
    text: str | None = None,
    **option_changes: Any,
) -> JobRecord:
    upload_path = save_upload(settings, two_class_csv() if text is None else text)
    return jobs.create("iris", make_options(**option_changes), upload_path, owner)


def wait_for(jobs: JobStore, job_id: str, statuses: set[JobStatus]) -> JobRecord:
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    for _ in range(int(JOB_DEADLINE_SECONDS / POLL_SECONDS)):
        job = jobs.get(job_id)
        if job.status in statuses or time.monotonic() > deadline:
            return job
        time.sleep(POLL_SECONDS)
    return jobs.get(job_id)


def wait_until_finished(runner: EmbeddedJobRunner, job_id: str) -> JobRecord:
    return asyncio.run(runner.wait(job_id, timeout=JOB_DEADLINE_SECONDS))


def test_a_job_cancelled_before_it_starts_is_not_run(
    settings: Settings, jobs: JobStore, runner: EmbeddedJobRunner
) -> None:
    job = queue_job(settings, jobs, runner.owner)
    jobs.cancel(job.id)

    runner.submit(job.id)
    probe = queue_job(settings, jobs, runner.owner)  # the pool runs jobs in order
    runner.submit(probe.id)
    wait_until_finished(runner, probe.id)

    cancelled = jobs.get(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.started_at is None
    assert not Path(job.upload_path or "").exists()


def test_wait_times_out_while_a_job_is_queued(jobs: JobStore, runner: EmbeddedJobRunner) -> None:
    job = jobs.create("iris", make_options(), "/nowhere.csv", runner.owner)  # never submitted

    with pytest.raises(TimeoutError, match="still queued"):
        asyncio.run(runner.wait(job.id, timeout=0.2))


def test_start_takes_over_the_jobs_of_a_stopped_server(settings: Settings, jobs: JobStore) -> None:
    was_running = queue_job(settings, jobs, "stopped-server")
    jobs.claim(was_running.id, "stopped-server")
    was_queued = queue_job(settings, jobs, "stopped-server")
    runner = EmbeddedJobRunner(settings, jobs)

    runner.start()
    try:
        failed = jobs.get(was_running.id)
        assert (failed.status, failed.error) == (JobStatus.FAILED, ORPHAN_ERROR)
        assert not Path(was_running.upload_path or "").exists()
        rerun = wait_until_finished(runner, was_queued.id)
    finally:
        runner.shutdown()

    assert rerun.status is JobStatus.SUCCEEDED, rerun.error
    assert rerun.owner == runner.owner


def test_a_job_trains_stores_and_records_a_version(
    settings: Settings, jobs: JobStore, runner: EmbeddedJobRunner
) -> None:
    job = queue_job(settings, jobs, runner.owner)

    runner.submit(job.id)
    done = wait_until_finished(runner, job.id)

    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.result is not None
    assert (done.result["version"], done.result["promoted"]) == (1, True)
    assert 0.0 <= done.result["metrics"]["accuracy"] <= 1.0
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.error is None
    assert not Path(job.upload_path or "").exists()
    assert settings.open_model_store().current_version("iris") == 1


def test_a_job_sent_promote_false_keeps_the_current_version(
    settings: Settings, jobs: JobStore, runner: EmbeddedJobRunner
) -> None:
    first = queue_job(settings, jobs, runner.owner)
    second = queue_job(settings, jobs, runner.owner, promote=False)

    runner.submit(first.id)
    runner.submit(second.id)
    wait_until_finished(runner, first.id)
    done = wait_until_finished(runner, second.id)

    assert done.result is not None, done.error
    assert (done.result["version"], done.result["promoted"]) == (2, False)
    assert settings.open_model_store().current_version("iris") == 1


def test_a_bad_csv_fails_the_job_with_the_dataset_message(
    settings: Settings, jobs: JobStore, runner: EmbeddedJobRunner, tmp_path: Path
) -> None:
    text = "length,width\n1,2\n3,4\n"
    job = queue_job(settings, jobs, runner.owner, text=text)
    expected = dataset_error(tmp_path, text, "species", settings)

    runner.submit(job.id)
    done = wait_until_finished(runner, job.id)

    assert (done.status, done.error, done.result) == (JobStatus.FAILED, expected, None)
    assert not Path(job.upload_path or "").exists()


def test_a_killed_job_process_fails_its_job_and_the_runner_goes_on(
    settings: Settings, jobs: JobStore, runner: EmbeddedJobRunner
) -> None:
    slow = queue_job(
        settings, jobs, runner.owner, text=noisy_csv(20_000), params={"n_estimators": 300}
    )
    next_job = queue_job(settings, jobs, runner.owner)
    runner.submit(slow.id)
    runner.submit(next_job.id)  # waits in the pool, which has one process
    running = wait_for(jobs, slow.id, {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED})
    assert running.status is JobStatus.RUNNING, running.error
    pool_processes = multiprocessing.active_children()
    assert len(pool_processes) == 1

    os.kill(pool_processes[0].pid or 0, signal.SIGKILL)

    killed = wait_until_finished(runner, slow.id)
    assert (killed.status, killed.error) == (JobStatus.FAILED, BROKEN_POOL_ERROR)
    assert not Path(slow.upload_path or "").exists()
    # The job that was waiting never started, so it runs in the replacement pool.
    after = wait_until_finished(runner, next_job.id)
    assert after.status is JobStatus.SUCCEEDED, after.error


def test_shutdown_leaves_unstarted_jobs_queued_for_another_server(
    settings: Settings, jobs: JobStore
) -> None:
    runner = EmbeddedJobRunner(settings, jobs)
    runner.start()
    job = queue_job(settings, jobs, runner.owner)
    assert jobs.recover_orphans(60, "peer") == ([], [])

    runner.shutdown()

    assert jobs.recover_orphans(60, "peer") == ([], [job.id])
    assert jobs.get(job.id).status is JobStatus.QUEUED


def test_run_training_job_runs_in_the_calling_process_too(
    settings: Settings, jobs: JobStore
) -> None:
    job = queue_job(settings, jobs, "celery-worker")
    settings.open_model_store()  # created when a worker starts; a job never creates a store

    result = run_training_job(job.id, settings)

    assert result is not None
    assert result["version"] == 1
    done = jobs.get(job.id)
    assert (done.status, done.result, done.owner) == (JobStatus.SUCCEEDED, result, "celery-worker")
    assert run_training_job(job.id, settings) is None  # already done: not run twice


def dataset_error(tmp_path: Path, text: str, target: str, settings: Settings) -> str:
    """The message read_labelled_csv gives for `text`, read here in the test process."""
    path = tmp_path / "expected.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidDataset) as error:
        read_labelled_csv(path, target, settings.dataset_limits())
    return error.value.message


def test_a_job_whose_upload_went_away_with_the_store_names_the_store(
    settings: Settings, jobs: JobStore
) -> None:
    job = queue_job(settings, jobs, "celery-worker")
    assert job.upload_path is not None
    Path(job.upload_path).unlink()  # the store folder, with its uploads, was moved away

    assert run_training_job(job.id, settings) is None

    failed = jobs.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and f"model store at {settings.model_dir}" in failed.error
    assert not settings.model_dir.exists()  # and nothing created in its place
