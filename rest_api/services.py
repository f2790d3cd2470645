"""The long-lived objects one worker serves with, opened by the lifespan and closed with it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ML.config import Settings
from ML.errors import StorageFull, StoreUnavailable
from ML.job_runner import EmbeddedJobRunner
from ML.jobs import JobStore
from ML.model_cache import ModelCache
from ML.model_store import ModelStore, check_name, open_model_store
from ML.prediction import ServedModel
from rest_api.uploads import remove_stray_uploads

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    jobs: JobStore
    runner: EmbeddedJobRunner
    models: ModelCache

    @classmethod
    def open(cls, settings: Settings) -> Services:
        settings.model_dir.mkdir(parents=True, exist_ok=True)
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        store = open_model_store(settings, create=True)
        jobs = JobStore(settings.jobs_db_path)
        runner = EmbeddedJobRunner(settings, jobs)
        runner.start()
        with contextlib.suppress(StorageFull, StoreUnavailable):  # runner.start logged it
            remove_stray_uploads(settings.uploads_dir, jobs)
        return cls(settings, store, jobs, runner, ModelCache(store, settings.batch_settings))

    async def served_model(self, name: str) -> ServedModel:
        """The current version of `name`: from this worker's cache, else loaded off the loop."""
        model = self.models.cached(name)
        if model is None:
            check_name(name)
            model = await run_in_threadpool(self.models.load, name)
            gc.freeze()  # a model lives as long as the worker: keep it out of GC passes
        return model

    def close(self) -> None:
        self.runner.shutdown()


async def follow_current_versions(models: ModelCache, poll_seconds: float) -> None:
    """Every worker notices a promotion or rollback within `poll_seconds`, without a restart."""
    while True:
        await asyncio.sleep(poll_seconds)
        try:
            if await run_in_threadpool(models.refresh):
                gc.freeze()
        except Exception:
            logger.exception("refreshing the model cache failed; retrying")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
