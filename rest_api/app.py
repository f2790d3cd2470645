"""The app factory: settings in, a FastAPI app with its edge middleware and routes out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.telemetry import TelemetryConfig
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, ExceptionHandler
from threadpoolctl import threadpool_limits

from ML.config import Settings
from rest_api.api_docs import install_api_docs
from rest_api.auth import build_authenticator
from rest_api.backend import Backend, expire_prediction_results, follow_current_versions
from rest_api.compat_fast import GetPredictionRoute
from rest_api.console import router as console_router
from rest_api.errors import install_error_handlers
from rest_api.logging_config import configure_logging
from rest_api.metrics import PENDING
from rest_api.middleware import EdgeMiddleware, RoleTable
from rest_api.openapi_document import complete_openapi
from rest_api.predict_json import PredictJsonRoute, document_predict_json
from rest_api.request_log import RequestLogWriter
from rest_api.routes import compat, health, jobs, models, predictions
from rest_api.routes.health import VERSION

# FastAPI's OpenTelemetry hooks cost a check per request; /metrics and the request log are this
# server's telemetry. A forker with an OpenTelemetry set-up turns them on here.
TELEMETRY_SWITCHES = ("tracing", "metrics", "logs")
TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

# Objects allocated (less those freed) between young-generation GC passes: above what the
# requests in flight hold at once, so a pass runs when garbage may have built up, not per burst.
YOUNG_GC_THRESHOLD = 10_000

DESCRIPTION = """
Train scikit-learn classifiers from a CSV and serve their predictions.

Every route but `/` and `/health/*` needs HTTP basic auth: click **Authorize**.
Roles: `predictor` (predict, and its own batch-prediction jobs), `trainer` (+ train, evaluate,
models, all jobs), `admin` (+ delete models and versions).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_path, settings.log_level)
    authenticator = build_authenticator(settings)
    request_log = RequestLogWriter(
        settings.log_path, settings.log_max_bytes, settings.log_backup_count
    )
    # The JSON predict route first: the hot path is matched before any other route is tried.
    # (Plain routes are inserted at the front in turn: the last listed comes first.)
    predict_json = PredictJsonRoute()
    routes: list[APIRouter | BaseRoute] = [GetPredictionRoute(), predict_json]
    routes += [predictions.router, models.router, jobs.router, health.router, compat.router]
    routes += [console_router]  # the web console at /ui: pages only; it acts through the API
    roles = RoleTable(routes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One thread per worker for numeric libraries: workers, not BLAS threads, use the cores.
        threadpool_limits(1)
        backend = Backend.open(settings)
        app.state.backend = backend
        predict_json.serve(backend)
        # Everything loaded so far lives as long as the worker: move it out of the garbage
        # collector's view, so full collections stay short and p99 latency with them.
        gc.collect()
        gc.freeze()
        # A young-generation pass every YOUNG_GC_THRESHOLD objects, not Python's 700: the
        # requests in flight alone hold more than 700 new objects, so the default ran a pass
        # every ~17 predict requests that found no garbage (the edge's objects form no cycles)
        # and cost ~6% of a request's instructions (callgrind, testing/edge_instructions.py).
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        tasks = [
            asyncio.create_task(
                follow_current_versions(backend.models, settings.model_poll_seconds)
            ),
            asyncio.create_task(expire_prediction_results(backend)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            predict_json.serve(None)
            backend.close()
            authenticator.close()
            request_log.close()
            PENDING.close()

    app = FastmlApp(
        title="fastml",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # No redirect built from the Host header: /models/ gets a 404 naming /models.
        redirect_slashes=False,
        docs_url=None,  # install_api_docs serves them without a CDN
        redoc_url=None,
        telemetry=TELEMETRY,
        # The edge, before any route reads the body. A forker's app.add_middleware(...)
        # after create_app goes outside it (README: CORS).
        middleware=[
            Middleware(
                EdgeMiddleware,
                writer=request_log,
                authenticator=authenticator,
                roles=roles,
                max_upload_bytes=settings.max_upload_bytes,
                max_json_bytes=settings.max_json_bytes,
            ),
        ],
    )
    for route in routes:
        if isinstance(route, APIRouter):
            app.include_router(route)
        else:
            app.router.routes.insert(0, route)  # before FastAPI's /docs routes too
    install_api_docs(app)
    install_error_handlers(app)
    _document_routes_outside_fastapi(app, roles)
    return app


def _document_routes_outside_fastapi(app: FastAPI, roles: RoleTable) -> None:
    """FastAPI documents its own routes; the JSON predict endpoint is added by hand, and the
    edge's answers to every route by complete_openapi."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document_predict_json(document)
            complete_openapi(document, roles)
        return generate()

    app.openapi = openapi  # type: ignore[method-assign]


class FastmlApp(FastAPI):
    """FastAPI, less the two layers of its stack that have nothing to do in this app.

    FastAPI 0.165 wraps every app in an exception-telemetry layer (it records exceptions for
    its OpenTelemetry spans: none while TELEMETRY is off) and an app body-limit layer (it
    enforces `max_body_size`, which this app leaves unset: the edge limits bodies, per route
    kind, before any is read). Each passes every request through a coroutine frame of its
    own, ~1,500 instructions a request. This builds FastAPI's stack in FastAPI's order from
    the same public parts (error middleware, the user's middleware, exception handlers, the
    exit stack that closes uploaded files) without those two, and FastAPI's own stack as soon
    as either has work: telemetry turned on, or a `max_body_size` set.
    tests/rest_api/test_app_stack.py compares the two stacks layer by layer, so a FastAPI
    release that adds a layer fails it rather than losing the layer here.
    """

    def build_middleware_stack(self) -> ASGIApp:
        if self.max_body_size is not None or any(
            TELEMETRY.get(k, True) for k in TELEMETRY_SWITCHES
        ):
            return super().build_middleware_stack()
        error_handler = None
        exception_handlers: dict[Any, ExceptionHandler] = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                exception_handlers[key] = value
        middleware = [
            Middleware(ServerErrorMiddleware, handler=error_handler, debug=self.debug),
            *self.user_middleware,
            Middleware(ExceptionMiddleware, handlers=exception_handlers, debug=self.debug),
            Middleware(AsyncExitStackMiddleware),
        ]
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        return app
