"""Training jobs: read, list, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ML.jobs import JobRecord
from rest_api.auth import Trainer
from rest_api.schemas import ERROR_RESPONSES, JobList, JobView
from rest_api.services import ServicesDep

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)


def job_view(job: JobRecord) -> JobView:
    data: dict[str, Any] = job.to_dict()
    links = {"self": f"/jobs/{job.id}", "model": f"/models/{job.model_name}"}
    result = job.result or {}
    if "version" in result:
        links["version"] = f"/models/{job.model_name}/versions/{result['version']}"
    return JobView(**data, links=links)


@router.get("/jobs", response_model=JobList, summary="Recent jobs, newest first")
def list_jobs(
    services: ServicesDep,
    user: Trainer,
    model: str | None = Query(default=None, description="only jobs of this model"),
    limit: int = Query(default=50, ge=1, le=1000),
) -> JobList:
    jobs = services.jobs.list_recent(limit, model_name=model)
    return JobList(jobs=[job_view(job) for job in jobs])


@router.get("/jobs/{job_id}", response_model=JobView, summary="A job's status and result")
def get_job(job_id: str, services: ServicesDep, user: Trainer) -> JobView:
    return job_view(services.jobs.get(job_id))


@router.delete("/jobs/{job_id}", response_model=JobView, summary="Cancel a queued job")
def cancel_job(job_id: str, services: ServicesDep, user: Trainer) -> JobView:
    return job_view(services.jobs.cancel(job_id))
