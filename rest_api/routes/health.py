"""Unauthenticated probes and the service's front door."""

from __future__ import annotations

import contextlib
import os
import shutil

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ML.errors import StorageFull, StoreUnavailable
from ML.sqlite_db import FULL_DISK_BYTES
from rest_api.auth import NEEDS_PREDICTOR
from rest_api.backend import Backend, BackendDep
from rest_api.errors import unusable_model_answer
from rest_api.metrics import render_metrics
from rest_api.query_keys import KNOWN_QUERY_KEYS_ONLY
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
    summary="Ready to serve: 503 while the model store is missing or unreadable, or the "
    "broker (FASTML_BROKER_URL) does not answer",
)
async def ready(backend: BackendDep) -> Response:
    checks, unusable_models = await run_in_threadpool(_readiness_checks, backend)
    if not backend.store.is_available() or checks.get("broker", "ok") != "ok":
        status, code = "unavailable", 503
    elif unusable_models or any(value != "ok" for value in checks.values()):
        # Predictions still work, but not of every model; or training or the job list may
        # not (full disk, say). An unusable model is that model's problem, not the server's.
        status, code = "degraded", 200
    else:
        status, code = "ready", 200
    view = HealthView(status=status, checks=checks, models=unusable_models)
    return JSONResponse(view.model_dump(), status_code=code)


def _readiness_checks(backend: Backend) -> tuple[dict[str, str], dict[str, str]]:
    """The checks by part, and the models whose current version would not load."""
    checks = {}
    unusable_models = {}
    model_dir = backend.settings.model_dir
    with contextlib.suppress(StoreUnavailable):  # the model_store check below says so
        unusable = backend.store.unusable_current_versions()
        unusable_models = {name: unusable_model_answer(e)[0] for name, e in unusable.items()}
    if not backend.store.is_available():
        checks["model_store"] = f"the model store at {model_dir} is missing or unreadable"
    elif not os.access(model_dir, os.R_OK | os.W_OK | os.X_OK):
        checks["model_store"] = f"{model_dir} not writable"
    elif shutil.disk_usage(model_dir).free < FULL_DISK_BYTES:
        checks["model_store"] = f"no space left in the model store at {model_dir}"
    else:
        checks["model_store"] = "ok"
    if backend.settings.broker_url:
        checks["broker"] = backend.queue_unavailable_reason() or "ok"
    try:
        backend.jobs.list_recent(1)
        checks["job_store"] = "ok"
    except (StorageFull, StoreUnavailable) as error:
        checks["job_store"] = error.message
    return checks, unusable_models


@router.get(
    "/metrics",
    dependencies=[NEEDS_PREDICTOR, KNOWN_QUERY_KEYS_ONLY],
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics of every worker",
    tags=["operations"],
)
async def metrics() -> PlainTextResponse:
    body, content_type = render_metrics()
    return PlainTextResponse(body, media_type=content_type)
