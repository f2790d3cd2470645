"""Training jobs: read, list, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Query

from rest_api.auth import NEEDS_TRAINER
from rest_api.backend import BackendDep
from rest_api.schemas import ERROR_RESPONSES, JobList, JobView

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES, dependencies=[NEEDS_TRAINER])


@router.get("/jobs", response_model=JobList, summary="Recent jobs, newest first")
def list_jobs(
    backend: BackendDep,
    model: str | None = Query(default=None, description="only jobs of this model"),
    limit: int = Query(default=50, ge=1, le=1000),
) -> JobList:
    jobs = backend.jobs.list_recent(limit, model_name=model)
    return JobList(jobs=[JobView.from_record(job) for job in jobs])


@router.get("/jobs/{job_id}", response_model=JobView, summary="A job's status and result")
def get_job(job_id: str, backend: BackendDep) -> JobView:
    return JobView.from_record(backend.jobs.get(job_id))


@router.delete(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="Cancel a queued job",
    description="A queued job becomes `cancelled` and never runs (a Celery worker checks the "
    "record before it starts a job). A running job is not stopped: 409, and it finishes.",
)
def cancel_job(job_id: str, backend: BackendDep) -> JobView:
    return JobView.from_record(backend.jobs.cancel(job_id))
