"""Batch-prediction jobs below the API: typed options per kind, the owner's compare-and-set,
the job entry point, and an old job database gaining the progress column."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ML.config import Settings
from ML.job_runner import run_job
from ML.jobs import JobKind, JobStatus, JobStore, PredictionJobOptions, TrainingJobOptions
from ML.prediction_jobs import result_path
from tests.iris import TrainedIris

OWNER = "server-a"
HEADER = "sepal_length,sepal_width,petal_length,petal_width\n"


@pytest.fixture
def iris_settings(settings: Settings, trained_iris: TrainedIris) -> Settings:
    trained_iris.copy_to(settings.model_dir)
    return settings


def queue(settings: Settings, rows: int) -> tuple[JobStore, str]:
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    upload = settings.uploads_dir / "batch.csv"
    upload.write_text(HEADER + "5.1,3.5,1.4,0.2\n" * rows)
    jobs = JobStore(settings.jobs_db_path)
    job = jobs.create("iris", PredictionJobOptions(version=1), str(upload), OWNER)
    return jobs, job.id


def test_options_are_typed_by_kind(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "jobs.sqlite3")
    options = PredictionJobOptions(version=3, with_probabilities=True, submitted_by="pete")
    job = jobs.get(jobs.create("iris", options, "/up.csv", OWNER).id)
    assert (job.kind, job.options, job.rows_done) == (JobKind.PREDICT, options, None)
    assert job.options_as(PredictionJobOptions) == options
    with pytest.raises(TypeError, match="is a predict job, not a train job"):
        job.options_as(TrainingJobOptions)
    training = TrainingJobOptions(target_variable="species", estimator="knn")
    assert jobs.get(jobs.create("iris", training, "/up.csv", OWNER).id).kind is JobKind.TRAIN
    assert jobs.claim(job.id, OWNER)
    assert jobs.set_rows_done(job.id, OWNER, 40)
    assert not jobs.set_rows_done(job.id, "another-owner", 80)  # not its job
    assert jobs.get(job.id).rows_done == 40


def test_an_old_job_database_gains_the_progress_column(tmp_path: Path) -> None:
    db_path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, model_name TEXT NOT "
            "NULL, status TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, finished_at "
            "TEXT, options TEXT NOT NULL, upload_path TEXT, owner TEXT, result TEXT, error TEXT)"
        )
    jobs = JobStore(db_path)
    job = jobs.create("iris", PredictionJobOptions(version=1), "/up.csv", OWNER)
    assert jobs.claim(job.id, OWNER) and jobs.set_rows_done(job.id, OWNER, 7)
    assert jobs.get(job.id).rows_done == 7


def test_run_job_predicts_a_predict_job(iris_settings: Settings) -> None:
    jobs, job_id = queue(iris_settings, 30)
    result: dict[str, Any] | None = run_job(job_id, iris_settings, OWNER)
    assert result is not None and (result["version"], result["rows"]) == (1, 30)
    job = jobs.get(job_id)
    assert (job.status, job.rows_done, job.result) == (JobStatus.SUCCEEDED, 30, result)
    lines = result_path(iris_settings.results_dir, job_id).read_text().splitlines()
    assert lines[0] == HEADER.strip() + ",prediction" and len(lines) == 31
    assert not (iris_settings.uploads_dir / "batch.csv").exists()


def test_a_job_failed_meanwhile_never_ends_succeeded(iris_settings: Settings) -> None:
    """A peer fails the job while it runs (as orphan recovery does): it stops at its next
    chunk, keeps no result file, and stays failed."""
    settings = iris_settings.model_copy(update={"csv_chunk_rows": 50})
    jobs, job_id = queue(settings, 200_000)
    outcome: list[dict[str, Any] | None] = []
    runner = threading.Thread(target=lambda: outcome.append(run_job(job_id, settings, OWNER)))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        for _ in range(120_000):
            if (jobs.get(job_id).rows_done or 0) > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        assert jobs.fail(job_id, "the server process running this job stopped")
    finally:
        runner.join(timeout=120)
    assert outcome == [None]
    job = jobs.get(job_id)
    assert job.status is JobStatus.FAILED and job.result is None
    assert (job.rows_done or 0) < 200_000
    assert list(settings.results_dir.iterdir()) == []  # neither the file nor its temp file
