"""The API side of the distributed mode: jobs are sent to Celery workers through Redis."""

from __future__ import annotations

import contextlib
import logging

from ML.config import Settings
from ML.errors import StoreUnavailable
from ML.job_runner import process_owner
from ML.jobs import JobRecord, wait_until_finished
from ML.redis_jobs import RedisJobStore
from ML.tasks import QUEUE, TASK_NAME, make_celery_app

logger = logging.getLogger(__name__)

# Publishing a job gives up after about a second of Redis not answering: the client gets a
# 503 with Retry-After at once rather than a request that hangs.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}


class CeleryJobRunner:
    """Sends queued jobs to the Celery workers; the methods the Backend uses of
    EmbeddedJobRunner. Liveness and redelivery are the broker's (late acknowledgement), so
    there is no heartbeat: a job whose worker died is delivered again (ML/tasks.py)."""

    def __init__(self, settings: Settings, jobs: RedisJobStore) -> None:
        self.settings = settings
        self.jobs = jobs
        self.owner = process_owner()
        self._app = make_celery_app(settings)

    def start(self) -> None:
        logger.info("job runner %s sends jobs to Celery workers", self.owner)

    def submit(self, job_id: str) -> None:
        """Queue the job's task; on failure the record is deleted (no half-created job) and
        StoreUnavailable says to try again."""
        try:
            self._app.send_task(
                TASK_NAME,
                args=[job_id],
                queue=QUEUE,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
        except Exception as exc:
            logger.warning("job %s could not be queued: %s", job_id, exc)
            with contextlib.suppress(StoreUnavailable):
                self.jobs.forget(job_id)
            raise StoreUnavailable(
                f"the job queue (FASTML_BROKER_URL) cannot be reached ({exc}); nothing was "
                "queued: try again in a moment"
            ) from exc

    async def wait(self, job_id: str, timeout: float) -> JobRecord:
        """Poll the job records until the job has finished; TimeoutError past `timeout` s."""
        return await wait_until_finished(self.jobs, job_id, timeout)

    def unavailable_reason(self) -> str | None:
        """Why jobs cannot be queued or read right now (Redis does not answer), or None."""
        try:
            self.jobs.ping()
        except StoreUnavailable as exc:
            return exc.message
        return None

    def shutdown(self) -> None:
        self._app.close()
        self.jobs.close()
        logger.info("job runner %s stopped", self.owner)
