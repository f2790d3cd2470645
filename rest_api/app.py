"""The app factory: settings in, a FastAPI app with auth, limits, logging and routes out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from threadpoolctl import threadpool_limits

from ML.config import Settings
from rest_api.api_docs import install_api_docs
from rest_api.auth import AuthMiddleware, build_authenticator
from rest_api.errors import install_error_handlers
from rest_api.lean_predict import LeanPredictMiddleware
from rest_api.limits import BodyLimitMiddleware
from rest_api.logging_config import configure_logging
from rest_api.request_log import RequestLogMiddleware, RequestLogWriter
from rest_api.routes import compat, health, jobs, models, predictions
from rest_api.routes.health import VERSION
from rest_api.services import Services, follow_current_versions

DESCRIPTION = """
Train scikit-learn classifiers from a CSV and serve their predictions.

Every route but `/` and `/health/*` needs HTTP basic auth: click **Authorize**.
Roles: `predictor` (predict), `trainer` (+ train, evaluate, models, jobs), `admin` (all).
"""


def create_app(settings: Settings | None = None) -> FastMLApp:
    settings = settings or Settings()
    configure_logging(settings.log_path)
    authenticator = build_authenticator(settings)

    request_log = RequestLogWriter(
        settings.log_path, settings.log_max_bytes, settings.log_backup_count
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One thread per worker for numeric libraries: workers, not BLAS threads, use the cores.
        threadpool_limits(1)
        services = Services.open(settings)
        app.state.services = services
        # Everything loaded so far lives as long as the worker: move it out of the garbage
        # collector's view, so full collections stay short and p99 latency with them.
        gc.collect()
        gc.freeze()
        follower = asyncio.create_task(
            follow_current_versions(services.models, settings.model_poll_seconds)
        )
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            services.close()
            request_log.close()

    app = FastMLApp(
        title="fastml",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_api_docs serves them without a CDN
        redoc_url=None,
    )
    for router in (health.router, models.router, predictions.router, jobs.router, compat.router):
        app.include_router(router)
    install_api_docs(app)
    install_error_handlers(app)
    # The edge, outermost first: request id and log line, auth, size limits, the lean
    # predict endpoint; all before any route reads the body, and before FastAPI's stack.
    inner: ASGIApp = app.call_fastapi
    if settings.lean_predict:
        inner = LeanPredictMiddleware(inner, app)
    inner = BodyLimitMiddleware(
        inner, max_upload_bytes=settings.max_upload_bytes, max_json_bytes=settings.max_json_bytes
    )
    app.edge = RequestLogMiddleware(AuthMiddleware(inner, authenticator), request_log)
    return app


class FastMLApp(FastAPI):
    """FastAPI behind an edge stack of plain ASGI middleware (see create_app)."""

    edge: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.edge is not None:
            await self.edge(scope, receive, send)
        else:
            await self.call_fastapi(scope, receive, send)

    async def call_fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
