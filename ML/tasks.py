"""The Celery app of the distributed mode: `celery --app ML.tasks worker` runs its job task.

Only with FASTML_BROKER_URL (docs/scaling.md). The task calls the same job function as the
embedded process pool; what Celery adds is delivery, and these settings keep a job from
being lost or run twice:

- JSON only (no pickle from the broker), one job id per message;
- late acknowledgement and reject-on-worker-lost: a message is acknowledged after its job
  ran, and one whose process died goes back to the queue;
- prefetch 1: a worker holds only the job it runs, so the others take the rest;
- a visibility timeout longer than the hard time limit, in every place Celery reads it, so
  Redis never hands a running job to a second worker;
- attempts counted in the job record (`RedisJobStore.start_attempt`): a job that kills its
  process every time fails after FASTML_JOB_MAX_ATTEMPTS, and a redelivered job that
  already committed does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.exceptions import TimeLimitExceeded

from ML.config import Settings
from ML.errors import FastMLError, StorageFull, StoreUnavailable
from ML.job_runner import (
    THREAD_LIMIT_ENV,
    process_owner,
    run_job,  # the function the embedded pool runs
)
from ML.redis_jobs import Delivery, RedisJobStore
from ML.signal_handlers import handlers_during

logger = logging.getLogger(__name__)

TASK_NAME = "fastml.run_job"
QUEUE = "fastml-jobs"
# How often a live worker looks for jobs whose visibility timeout passed (a dead worker's),
# and at every look rather than kombu's default of every 10th (up to 100 s more of waiting).
# Scanning at each look costs one ZRANGE per 10 s per worker.
RESTORE_SWEEP_SECONDS = 10
RESTORE_SCAN_THROTTLE = 1


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting of fastml, derived from `settings` (a test checks each one).

    Past the soft limit a job is told to stop (it fails); FASTML_JOB_STOP_GRACE_SECONDS later
    it is killed. Redis waits as long again past that hard limit before it redelivers an
    unacknowledged job: no job outlives the hard limit, so the margin only covers clock
    differences between machines; a longer one only delays the jobs of a worker that died.
    """
    hard_limit = settings.job_time_limit_seconds + settings.job_stop_grace_seconds
    transport = {"visibility_timeout": hard_limit + settings.job_stop_grace_seconds}
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            **transport,
            "unacked_restore_interval": RESTORE_SWEEP_SECONDS,
            "unacked_restore_throttle": RESTORE_SCAN_THROTTLE,
        },
        "result_backend_transport_options": dict(transport),
        "task_soft_time_limit": settings.job_time_limit_seconds,
        "task_time_limit": hard_limit,
        # Job records are fastml's results: Celery keeps none.
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        # A fresh process per job, as in the embedded pool: memory goes back at once.
        "worker_max_tasks_per_child": 1,
    }


def make_celery_app(settings: Settings) -> Celery:
    """The app for `settings`: workers run its task, API replicas send to it."""
    if not settings.broker_url:
        raise ValueError("the Celery app needs FASTML_BROKER_URL=redis://HOST:PORT/DB")
    app = Celery("fastml")
    app.conf.update(celery_config(settings))

    # shared=False: each app (a test may make several) keeps its own task, unregistered
    # anywhere else.
    @app.task(name=TASK_NAME, bind=True, shared=False)
    def run_job_task(task: Any, job_id: str) -> None:
        with soft_time_limit_fails_the_job(settings):
            run_delivered_job(settings, job_id, str(task.request.id))

    return app


def run_delivered_job(settings: Settings, job_id: str, task_id: str) -> None:
    """One delivery of a job's task: run it unless it was cancelled, has finished, or used
    up its attempts (see RedisJobStore.start_attempt)."""
    jobs = _job_store(settings)
    delivery = jobs.start_attempt(job_id, settings.job_max_attempts)
    if delivery is Delivery.RUN:
        run_job(job_id, settings, f"{process_owner()}:{task_id}")
        return
    if delivery is Delivery.EXHAUSTED:
        job = jobs.get(job_id)
        logger.warning("job %s failed: %s", job_id, job.error)
        _delete_upload(job.upload_path)
        return
    logger.info("job %s not run: %s", job_id, delivery.value)


class JobTimeLimitExceeded(FastMLError):
    """The job ran past FASTML_JOB_TIME_LIMIT_SECONDS (Celery's soft time limit)."""


def time_limit_error(settings: Settings) -> str:
    return (
        f"the job ran longer than {settings.job_time_limit_seconds} s "
        "(FASTML_JOB_TIME_LIMIT_SECONDS) and was stopped; train on fewer rows or a "
        "lighter estimator, or raise the limit"
    )


@contextmanager
def soft_time_limit_fails_the_job(settings: Settings) -> Iterator[None]:
    """At the soft time limit the pool's parent sends SIGUSR1, on which billiard raises
    SoftTimeLimitExceeded, recorded as an "internal error". Raise a FastMLError instead,
    whose message the job records: it names the limit and what to do."""

    def stop(signum: int, frame: Any) -> None:
        raise JobTimeLimitExceeded(time_limit_error(settings))

    # (A pool of threads has no soft time limit: nothing is set there.)
    with handlers_during({signal.SIGUSR1: stop}):
        yield


def fail_timed_out_job(settings: Settings, job_id: str) -> None:
    """A job killed at the hard time limit: Celery acknowledged it; record why it stopped."""
    jobs = _job_store(settings)
    if jobs.fail(job_id, time_limit_error(settings)):
        _delete_upload(jobs.get(job_id).upload_path)


def _job_store(settings: Settings) -> RedisJobStore:
    return _redis_job_store(settings.broker_url or "", settings.redis_key_prefix)


@cache
def _redis_job_store(url: str, prefix: str) -> RedisJobStore:
    """One connection pool per process (redis-py starts a new one in a forked child)."""
    return RedisJobStore.from_url(url, prefix)


def _delete_upload(upload_path: str | None) -> None:
    if upload_path:
        Path(upload_path).unlink(missing_ok=True)


@cache
def worker_app() -> Celery:
    """The app `celery --app ML.tasks` finds, built from the worker's environment."""
    return make_celery_app(worker_settings())


def __getattr__(name: str) -> Celery:
    # Celery looks up `ML.tasks.app`; built on first use, so importing this module reads
    # no settings (the API process builds its own app from the settings it was given).
    if name == "app":
        return worker_app()
    raise AttributeError(name)


@signals.worker_init.connect
def _limit_threads(**_: Any) -> None:
    # One core per job process, as in the embedded pool: BLAS reads these when it loads,
    # which is in the worker's main process (below), before it forks its pool processes.
    for name in THREAD_LIMIT_ENV:
        os.environ[name] = "1"


@signals.worker_ready.connect
def _recover_staged_versions(sender: Any = None, **_: Any) -> None:
    """Publish or discard versions left staged by job processes that died committing.
    This loads scikit-learn in the main process, so every forked job process starts with it."""
    from ML.job_commit import recover_staged_versions

    settings = worker_settings()
    try:
        recover_staged_versions(settings.open_model_store(create=False), _job_store(settings))
    except (StorageFull, StoreUnavailable) as exc:
        # The store moved away or full: the worker starts anyway, and its jobs say why.
        logger.warning("could not recover staged model versions: %s", exc.message)
    except Exception:
        logger.exception("could not recover staged model versions; the next start tries again")


@signals.task_failure.connect
def _record_time_limit(
    sender: Any = None, exception: BaseException | None = None, args: Any = None, **_: Any
) -> None:
    if isinstance(exception, TimeLimitExceeded) and args:
        fail_timed_out_job(worker_settings(), str(args[0]))


@cache
def worker_settings() -> Settings:
    """The worker's settings, read once from its environment."""
    return Settings()
