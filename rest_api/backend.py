"""The objects one worker serves with (stores, job runner, model cache), and what routes ask
of them: the served model, training submission, evaluation. Opened by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from ML.config import Settings
from ML.datasets import check_training_csv_start
from ML.errors import StorageFull, StoreUnavailable
from ML.evaluation import Scores, evaluate_csv
from ML.job_runner import EmbeddedJobRunner
from ML.jobs import JobRecord, JobStore, TrainingJobOptions
from ML.model_cache import ModelCache
from ML.model_store import ModelStore, check_name
from ML.prediction import ServedModel
from ML.private_files import make_private_dir
from rest_api.metrics import TRAINING_JOBS
from rest_api.uploads import remove_stray_uploads, save_upload

logger = logging.getLogger(__name__)


@dataclass
class Backend:
    settings: Settings
    store: ModelStore
    jobs: JobStore
    runner: EmbeddedJobRunner
    models: ModelCache

    @classmethod
    def open(cls, settings: Settings) -> Backend:
        make_private_dir(settings.uploads_dir)  # and the state folder, 0700
        store = settings.open_model_store()
        jobs = JobStore(settings.jobs_db_path)
        runner = EmbeddedJobRunner(settings, jobs)
        runner.start()
        with contextlib.suppress(StorageFull, StoreUnavailable):  # runner.start logged it
            remove_stray_uploads(settings.uploads_dir, jobs)
        return cls(settings, store, jobs, runner, ModelCache(store, settings.batch_settings))

    def close(self) -> None:
        self.runner.shutdown()

    async def served_model(self, name: str) -> ServedModel:
        """The current version of `name`: from this worker's cache, else loaded off the loop."""
        model = self.models.cached(name)
        if model is None:
            check_name(name)
            model = await run_in_threadpool(self.models.load, name)
            gc.freeze()  # a model lives as long as the worker: keep it out of GC passes
        return model

    async def save_training_upload(self, upload: UploadFile) -> Path:
        """Save a training upload (fsynced, 0600); first a clear 503 when the model store is
        gone, rather than a job that could never save its version."""
        self.store.require_available()
        return await save_upload(upload, self.settings.uploads_dir)

    async def submit_training(
        self, name: str, upload_path: Path, options: TrainingJobOptions
    ) -> JobRecord:
        """Queue a training job on a saved upload (deleted if refused); a CSV whose header
        cannot train fails here, at once, rather than in the job."""
        try:
            await run_in_threadpool(
                check_training_csv_start,
                upload_path,
                options.target_variable,
                self.settings.dataset_limits(),
            )
            job = await run_in_threadpool(
                self.jobs.create, name, options, str(upload_path), self.runner.owner
            )
        except BaseException:
            upload_path.unlink(missing_ok=True)
            raise
        self.runner.submit(job.id)
        TRAINING_JOBS.inc()
        return job

    async def evaluate(
        self, name: str, source: BinaryIO, target_variable: str, scores: Scores = Scores.ALL
    ) -> tuple[ServedModel, dict[str, Any]]:
        """The current version of `name` and its `scores` on a labelled CSV.

        In the thread pool even for a 45-row file: measured against evaluating on the event
        loop, the pool answered /get_prediction 1.9-2.8x faster (docs/benchmarks.md).
        """
        model = await self.served_model(name)
        metrics = await run_in_threadpool(
            evaluate_csv, model, source, target_variable, self.settings.dataset_limits(), scores
        )
        return model, metrics


async def follow_current_versions(models: ModelCache, poll_seconds: float) -> None:
    """Every worker notices a promotion or rollback within `poll_seconds`, without a restart."""
    while True:
        await asyncio.sleep(poll_seconds)
        try:
            if await run_in_threadpool(models.refresh):
                gc.freeze()
        except Exception:
            logger.exception("refreshing the model cache failed; retrying")


async def get_backend(request: Request) -> Backend:
    # async so that FastAPI calls it on the loop rather than in the thread pool (see RoleCheck).
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(get_backend)]
