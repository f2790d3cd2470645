"""The objects one worker serves with (stores, job runner, model cache), and what routes ask
of them: the served model, job submission, evaluation. Opened by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Protocol

from fastapi import Depends, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from ML.config import Settings
from ML.datasets import check_training_csv_start
from ML.errors import StorageFull, StoreUnavailable
from ML.evaluation import Scores, evaluate_csv
from ML.job_runner import EmbeddedJobRunner
from ML.jobs import (
    JobOptions,
    JobRecord,
    JobRecords,
    JobStore,
    PredictionJobOptions,
    TrainingJobOptions,
)
from ML.model_cache import ModelCache
from ML.model_store import ModelStore, check_name
from ML.prediction import ServedModel
from ML.prediction_jobs import check_prediction_csv_start, remove_expired_results
from ML.private_files import make_private_dir
from rest_api.metrics import TRAINING_JOBS
from rest_api.uploads import remove_stray_uploads, save_upload

logger = logging.getLogger(__name__)

RESULT_SWEEP_MAX_SECONDS = 60.0


class JobRunner(Protocol):
    """EmbeddedJobRunner (the default) or CeleryJobRunner (FASTML_BROKER_URL)."""

    owner: str

    def start(self) -> None: ...

    def submit(self, job_id: str) -> None: ...

    async def wait(self, job_id: str, timeout: float) -> JobRecord: ...

    def shutdown(self) -> None: ...


@dataclass
class Backend:
    settings: Settings
    store: ModelStore
    jobs: JobRecords
    runner: JobRunner
    models: ModelCache

    @classmethod
    def open(cls, settings: Settings) -> Backend:
        """A worker's backend. It never fails for a missing store: under gunicorn the master
        created the store (rest_api/storage_setup.py) and workers only open it, so a worker
        started while the folder is away boots, is not ready, and answers 503 until it is back."""
        if settings.create_store:
            make_private_dir(settings.uploads_dir)  # and the state folder, 0700
        store = settings.open_model_store()
        jobs = settings.open_job_store(create=settings.create_store)
        runner = open_job_runner(settings, jobs)
        runner.start()
        with contextlib.suppress(StorageFull, StoreUnavailable):  # runner.start logged it
            remove_stray_uploads(settings.uploads_dir, jobs)
        return cls(settings, store, jobs, runner, ModelCache(store, settings.batch_settings))

    def close(self) -> None:
        self.runner.shutdown()

    def queue_unavailable_reason(self) -> str | None:
        """Why jobs cannot be queued right now (the broker's Redis is away); None when they
        can, and always on the embedded default."""
        if not self.settings.broker_url:
            return None
        from ML.celery_runner import CeleryJobRunner

        assert isinstance(self.runner, CeleryJobRunner)
        return self.runner.unavailable_reason()

    async def served_model(self, name: str) -> ServedModel:
        """The current version of `name`: from this worker's cache, else loaded off the loop."""
        model = self.models.cached(name)
        if model is None:
            check_name(name)
            model = await run_in_threadpool(self.models.load, name)
            gc.freeze()  # a model lives as long as the worker: keep it out of GC passes
        return model

    async def save_job_upload(self, upload: UploadFile) -> Path:
        """Save a job's upload (fsynced, 0600); first a clear 503 when the model store is
        gone, rather than a job that could never use it."""
        self.store.require_available()
        return await save_upload(upload, self.settings.uploads_dir)

    async def submit_training(
        self, name: str, upload_path: Path, options: TrainingJobOptions
    ) -> JobRecord:
        """Queue a training job on a saved upload (deleted if refused); a CSV whose header
        cannot train fails here, at once, rather than in the job."""
        job = await self._queue(
            name,
            upload_path,
            options,
            partial(
                check_training_csv_start,
                upload_path,
                options.target_variable,
                self.settings.dataset_limits(),
            ),
        )
        TRAINING_JOBS.inc()
        return job

    async def submit_prediction(
        self, name: str, upload: UploadFile, *, with_probabilities: bool, submitted_by: str
    ) -> JobRecord:
        """Queue a batch-prediction job against the current version of `name`, pinned: an
        unknown model fails before the upload is saved, a CSV whose header or first rows the
        model cannot predict fails before the job is queued."""
        model = await self.served_model(name)
        options = PredictionJobOptions(
            version=model.version,
            with_probabilities=with_probabilities,
            submitted_by=submitted_by,
            filename=upload.filename,
        )
        upload_path = await self.save_job_upload(upload)
        check = partial(
            check_prediction_csv_start, model, upload_path, with_probabilities=with_probabilities
        )
        return await self._queue(name, upload_path, options, check)

    async def _queue(
        self, name: str, upload_path: Path, options: JobOptions, check: Callable[[], None]
    ) -> JobRecord:
        """Check a saved upload, record its job and hand it to the runner; the upload is
        deleted if anything refuses it."""
        try:
            await run_in_threadpool(check)
            job = await run_in_threadpool(
                self.jobs.create, name, options, str(upload_path), self.runner.owner
            )
            # Off the event loop: on Celery this publishes to Redis, and a job that could
            # not be queued is deleted again (the upload just below).
            await run_in_threadpool(self.runner.submit, job.id)
        except BaseException:
            upload_path.unlink(missing_ok=True)
            raise
        return job

    async def evaluate(
        self, name: str, source: BinaryIO, target_variable: str, scores: Scores = Scores.ALL
    ) -> tuple[ServedModel, dict[str, Any]]:
        """The current version of `name` and its `scores` on a labelled CSV.

        A CSV held in memory (an io.BytesIO, as /get_prediction's plain form gives it) of at
        most INLINE_EVALUATION_MAX_BYTES, for a compiled model, is evaluated on the event loop;
        anything else (a spooled upload, a larger file, a scikit-learn pipeline) in the thread
        pool (see INLINE_EVALUATION_MAX_BYTES for why).
        """
        model = await self.served_model(name)
        limits = self.settings.dataset_limits()
        if model.compiled is not None and _in_memory_size(source) <= INLINE_EVALUATION_MAX_BYTES:
            return model, evaluate_csv(model, source, target_variable, limits, scores)
        metrics = await run_in_threadpool(
            evaluate_csv, model, source, target_variable, limits, scores
        )
        return model, metrics


# The largest in-memory CSV evaluated on the event loop rather than in the thread pool (0 would
# send every evaluation to the pool). /get_prediction's 45-row test.csv on a 100-tree forest,
# wrk at c=64 on a quiet 2-core machine, same run: 2,143-2,306 req/s on the loop against
# 1,129-1,302 in the pool (docs/benchmarks.md, session 6): with the forest's walk compiled
# (ML/tree_walk.py) that evaluation is ~0.35 ms in process, and the pool hop costs more than it
# saves. 4 KiB (~160 iris rows) holds the loop ~0.85 ms; 16 KiB would hold it ~2 ms, delaying
# every other request of the worker.
INLINE_EVALUATION_MAX_BYTES = 4 << 10


def _in_memory_size(source: BinaryIO) -> float:
    """The bytes left to read in an io.BytesIO; infinity for any other file."""
    if not isinstance(source, io.BytesIO):
        return math.inf
    return source.getbuffer().nbytes - source.tell()


def open_job_runner(settings: Settings, jobs: JobRecords) -> JobRunner:
    """Celery workers for a Redis job store (FASTML_BROKER_URL), else the in-server pool.
    Celery is imported only then: the embedded default loads none of it."""
    if settings.broker_url:
        from ML.celery_runner import CeleryJobRunner
        from ML.redis_jobs import RedisJobStore

        assert isinstance(jobs, RedisJobStore)
        return CeleryJobRunner(settings, jobs)
    assert isinstance(jobs, JobStore)
    return EmbeddedJobRunner(settings, jobs)


async def follow_current_versions(models: ModelCache, poll_seconds: float) -> None:
    """Every worker notices a promotion or rollback within `poll_seconds`, without a restart."""
    while True:
        await asyncio.sleep(poll_seconds)
        try:
            if await run_in_threadpool(models.refresh):
                gc.freeze()
        except Exception:
            logger.exception("refreshing the model cache failed; retrying")


async def expire_prediction_results(backend: Backend) -> None:
    """Delete batch-prediction results past their retention (FASTML_PREDICTION_RESULT_HOURS);
    every worker of every replica sweeps, so no extra process is needed in either mode."""
    max_age = backend.settings.prediction_result_hours * 3600
    # Often enough that a file outlives its expiry by a small fraction of its retention.
    every = min(RESULT_SWEEP_MAX_SECONDS, max(1.0, max_age / 10))
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(
                remove_expired_results, backend.settings.results_dir, backend.jobs, max_age
            )
        except Exception:
            logger.exception("removing expired batch-prediction results failed; retrying")


async def get_backend(request: Request) -> Backend:
    # async so that FastAPI calls it on the loop rather than in the thread pool (see RoleCheck).
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(get_backend)]
