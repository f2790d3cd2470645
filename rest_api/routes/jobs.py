"""Jobs: read, list, cancel; a batch-prediction job's result file.

Trainers see every job. A predictor sees only the batch-prediction jobs it submitted: it may
read them, download their result and delete them, and nothing else here.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Query
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from ML.jobs import JobKind, JobRecord, PredictionJobOptions
from ML.prediction_jobs import delete_result, open_result
from rest_api.auth import NEEDS_TRAINER, PredictorUser, User
from rest_api.backend import Backend, BackendDep
from rest_api.errors import ApiError
from rest_api.query_keys import KNOWN_QUERY_KEYS_ONLY
from rest_api.schemas import JobList, JobView, error_responses
from rest_api.users import Role

# Every job route reads the job database: 507 when it cannot be opened for a full disk. The
# role is per route: a predictor reads the batch-prediction jobs it submitted.
router = APIRouter(
    tags=["jobs"], responses=error_responses(507), dependencies=[KNOWN_QUERY_KEYS_ONLY]
)

RESULT_READ_BYTES = 1024 * 1024


@router.get(
    "/jobs",
    response_model=JobList,
    dependencies=[NEEDS_TRAINER],
    summary="Recent jobs, newest first",
)
def list_jobs(
    backend: BackendDep,
    model: str | None = Query(default=None, description="only jobs of this model"),
    limit: int = Query(default=50, ge=1, le=1000),
) -> JobList:
    jobs = backend.jobs.list_recent(limit, model_name=model)
    return JobList(jobs=[JobView.from_record(job) for job in jobs])


@router.get(
    "/jobs/{job_id}",
    response_model=JobView,
    responses=error_responses(403, 404),
    summary="A job's status and result",
)
def get_job(job_id: str, backend: BackendDep, user: PredictorUser) -> JobView:
    return JobView.from_record(_visible_job(backend, job_id, user))


@router.get(
    "/jobs/{job_id}/result",
    response_class=StreamingResponse,
    responses={
        **error_responses(403, 404, 409),
        200: {"content": {"text/csv": {}}, "description": "input columns + prediction"},
    },
    summary="A finished batch-prediction job's predictions, as /predict/csv answers them",
)
def get_result(job_id: str, backend: BackendDep, user: PredictorUser) -> StreamingResponse:
    job = _visible_job(backend, job_id, user)
    # Opened before the answer starts: a deletion or expiry meanwhile cannot cut it short.
    result = open_result(backend.settings, job)
    return StreamingResponse(
        iter(partial(result.read, RESULT_READ_BYTES), b""),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job.model_name}-{job.id}.csv"'},
        background=BackgroundTask(result.close),
    )


@router.delete(
    "/jobs/{job_id}",
    response_model=JobView,
    responses=error_responses(403, 404, 409),
    summary="Cancel a queued job; delete a finished batch-prediction job's result file",
    description="A queued job becomes `cancelled` and never runs (a Celery worker checks the "
    "record before it starts a job). A running job is not stopped: 409, and it finishes. "
    "A finished batch-prediction job's result file is deleted (the record stays).",
)
def delete_job(job_id: str, backend: BackendDep, user: PredictorUser) -> JobView:
    job = _visible_job(backend, job_id, user)
    if job.kind is JobKind.PREDICT and job.status.is_terminal:
        delete_result(backend.settings, job.id)
        return JobView.from_record(job)
    return JobView.from_record(backend.jobs.cancel(job_id))


def _visible_job(backend: Backend, job_id: str, user: User) -> JobRecord:
    """The job, if `user` may see it: trainers any job, predictors their own batch jobs."""
    job = backend.jobs.get(job_id)
    if user.role.allows(Role.TRAINER):
        return job
    if isinstance(job.options, PredictionJobOptions) and job.options.submitted_by == user.name:
        return job
    raise ApiError(
        403,
        f"user '{user.name}' has role {user.role.value}; it may see only the "
        "batch-prediction jobs it submitted",
    )
