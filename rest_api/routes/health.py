"""Unauthenticated probes and the service's front door."""

from __future__ import annotations

import os
import sqlite3

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from rest_api.auth import NEEDS_PREDICTOR
from rest_api.backend import Backend, BackendDep
from rest_api.metrics import render_metrics
from rest_api.schemas import HealthView, RootView

router = APIRouter(tags=["health"])
VERSION = "0.1.0"


@router.get("/", response_model=RootView, summary="Service name, version and links")
async def root() -> RootView:
    return RootView(
        name="fastml",
        version=VERSION,
        links={
            "docs": "/docs",
            "openapi": "/openapi.json",
            "live": "/health/live",
            "ready": "/health/ready",
            "models": "/models",
            "jobs": "/jobs",
            "metrics": "/metrics",
        },
    )


@router.get("/health/live", response_model=HealthView, summary="The process answers")
async def live() -> HealthView:
    return HealthView(status="ok")


@router.get(
    "/health/ready",
    response_model=HealthView,
    responses={503: {"model": HealthView}},
    summary="Model store and job store answer (503 until they do)",
)
async def ready(backend: BackendDep) -> Response:
    checks = await run_in_threadpool(_readiness_checks, backend)
    is_ready = all(value == "ok" for value in checks.values())
    body = HealthView(status="ready" if is_ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503)


def _readiness_checks(backend: Backend) -> dict[str, str]:
    checks = {}
    model_dir = backend.settings.model_dir
    checks["model_store"] = (
        "ok" if os.access(model_dir, os.R_OK | os.W_OK | os.X_OK) else f"{model_dir} not writable"
    )
    try:
        backend.jobs.list_recent(1)
        checks["job_store"] = "ok"
    except sqlite3.Error as error:
        checks["job_store"] = f"job store unavailable: {error}"
    return checks


@router.get(
    "/metrics",
    dependencies=[NEEDS_PREDICTOR],
    summary="Prometheus metrics of every worker",
    tags=["operations"],
)
async def metrics() -> Response:
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
