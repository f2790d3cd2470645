"""The app's middleware stack is FastAPI's own, less the two layers that have no work here."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Router

from ML.config import Settings
from rest_api.app import FastmlApp, create_app

# What FastmlApp leaves out while telemetry is off and no max_body_size is set.
IDLE_FASTAPI_LAYERS = ["ExceptionTelemetryMiddleware", "AppBodyLimitMiddleware"]


def _layers(app: object) -> list[str]:
    """The class names of a stack, outermost first, down to the router."""
    names = []
    for _ in range(50):
        names.append(type(app).__name__)
        if isinstance(app, Router):
            return names
        app = app.app  # type: ignore[attr-defined]
    raise AssertionError(f"no end to the stack after 50 layers: {names}")


def _fastapi_stack(app: FastAPI) -> list[str]:
    return _layers(FastAPI.build_middleware_stack(app))


def test_the_stack_is_fastapis_without_its_idle_layers(settings: Settings) -> None:
    app = create_app(settings)
    app.add_middleware(CORSMiddleware, allow_origins=["https://dashboard.example"])
    ours, fastapis = _layers(app.build_middleware_stack()), _fastapi_stack(app)
    # A FastAPI release that adds a layer fails here: FastmlApp must learn of it.
    assert ours == [name for name in fastapis if name not in IDLE_FASTAPI_LAYERS]
    assert set(IDLE_FASTAPI_LAYERS) <= set(fastapis)
    # A forker's middleware sees every request: outside the edge, inside the error layer.
    assert ours[:3] == ["ServerErrorMiddleware", "CORSMiddleware", "EdgeMiddleware"]
    assert ours[-3:] == ["ExceptionMiddleware", "AsyncExitStackMiddleware", "APIRouter"]


def test_a_body_limit_gets_fastapis_own_stack() -> None:
    app = FastmlApp(max_body_size=1000)
    assert _layers(app.build_middleware_stack()) == _fastapi_stack(app)
