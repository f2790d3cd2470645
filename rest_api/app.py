"""The app factory: settings in, a FastAPI app with auth, limits, logging and routes out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from ML.config import Settings
from rest_api.auth import Authenticator, AuthMiddleware, LoginThrottle
from rest_api.errors import install_error_handlers
from rest_api.limits import BodyLimitMiddleware
from rest_api.logging_config import configure_logging
from rest_api.request_log import RequestLogMiddleware
from rest_api.routes import compat, health, jobs, models, predictions
from rest_api.routes.health import VERSION
from rest_api.services import Services, follow_current_versions
from rest_api.users import load_users

DESCRIPTION = """
Train scikit-learn classifiers from a CSV and serve their predictions.

Every route but `/` and `/health/*` needs HTTP basic auth: click **Authorize**.
Roles: `predictor` (predict), `trainer` (+ train, evaluate, models, jobs), `admin` (all).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_path)
    authenticator = Authenticator(
        load_users(settings),
        LoginThrottle(settings.login_max_failures, settings.login_window_seconds),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One thread per worker for numeric libraries: workers, not BLAS threads, use the cores.
        threadpool_limits(1)
        services = Services.open(settings)
        app.state.services = services
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

    app = FastAPI(
        title="fastml",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    for router in (health.router, models.router, predictions.router, jobs.router, compat.router):
        app.include_router(router)
    install_error_handlers(app)
    # Added last = outermost: the request id and log line wrap everything, auth runs before
    # the size check, and both run before any route reads the body.
    app.add_middleware(
        BodyLimitMiddleware,
        max_upload_bytes=settings.max_upload_bytes,
        max_json_bytes=settings.max_json_bytes,
    )
    app.add_middleware(AuthMiddleware, authenticator=authenticator)
    app.add_middleware(RequestLogMiddleware)
    return app
