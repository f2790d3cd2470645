"""The console's pages: HTML rendered from the shared stores, behind the API's auth and roles.

Pages only read. Every action (train, promote, predict, cancel) is the page's script calling
the JSON API, so the API's own checks are the console's checks: there is no second way in.
The role each page needs is declared on it with the API's RoleCheck, so the edge refuses a
predictor a trainer's page exactly as it refuses the API route behind it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ML.model_store import check_name
from rest_api.auth import NEEDS_PREDICTOR, NEEDS_TRAINER, User
from rest_api.backend import BackendDep
from rest_api.console.summaries import (
    HEADLINE_METRICS,
    age_text,
    estimator_choices,
    model_rows,
    version_columns,
)
from rest_api.errors import ApiError
from rest_api.users import Role

UI = "/ui"
STATIC_DIR = files("rest_api.console") / "static"
STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css"}
# No inline script or style anywhere: a CSV cell that slipped past escaping still could not
# run. No framing either, so another site cannot overlay the promote button (clickjacking).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)

router = APIRouter(include_in_schema=False, dependencies=[NEEDS_PREDICTOR])
templates = Environment(
    loader=PackageLoader("rest_api.console", "templates"),
    autoescape=True,  # every uploaded name, label and column is text, whatever it holds
    undefined=StrictUndefined,
)


def _user(request: Request) -> User:
    user: User = request.scope["state"]["user"]  # set by the edge for every /ui request
    return user


def _render(request: Request, template: str, **context: Any) -> HTMLResponse:
    user = _user(request)
    body = templates.get_template(template).render(
        user=user, is_trainer=user.role.allows(Role.TRAINER), ui=UI, **context
    )
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-store",  # pages show live state and per-user choices
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(UI)
def home(request: Request) -> Response:
    """Trainers start at the models, predictors at what they may do: predict."""
    target = "models" if _user(request).role.allows(Role.TRAINER) else "predict"
    return RedirectResponse(f"{UI}/{target}", status_code=303)


@router.get(f"{UI}/models", dependencies=[NEEDS_TRAINER])
def models_page(request: Request, backend: BackendDep) -> HTMLResponse:
    return _render(
        request,
        "models.html",
        page="models",
        headline=HEADLINE_METRICS,
        models=model_rows(backend.store.list_models()),
    )


@router.get(f"{UI}/models/{{name}}", dependencies=[NEEDS_TRAINER])
def model_page(name: str, request: Request, backend: BackendDep) -> HTMLResponse:
    info = backend.store.get_model(name)  # 404 JSON for an unknown model, as the API
    return _render(
        request,
        "model.html",
        page="model",
        name=info.name,
        current=info.current_version,
        headline=HEADLINE_METRICS,
        versions=version_columns(info),
    )


@router.get(f"{UI}/train", dependencies=[NEEDS_TRAINER])
def train_page(request: Request, name: str = "") -> HTMLResponse:
    return _render(request, "train.html", page="train", name=name, estimators=estimator_choices())


@router.get(f"{UI}/jobs", dependencies=[NEEDS_TRAINER])
def jobs_page(request: Request, backend: BackendDep) -> HTMLResponse:
    # The API's own view of each job (GET /jobs), whatever kind of job it is.
    jobs = [job.to_dict() for job in backend.jobs.list_recent(50)]
    return _render(
        request,
        "jobs.html",
        page="jobs",
        jobs=[(job, age_text(job["created_at"])) for job in jobs],
        is_busy=any(job["status"] in ("queued", "running") for job in jobs),
    )


@router.get(f"{UI}/predict")
def predict_index(request: Request, backend: BackendDep) -> HTMLResponse:
    served = [info for info in backend.store.list_models() if info.current_version is not None]
    return _render(request, "predict_index.html", page="predict", models=served)


@router.get(f"{UI}/predict/{{name}}")
def predict_page(name: str, request: Request, backend: BackendDep) -> HTMLResponse:
    check_name(name)
    info = backend.store.get_model(name)
    current = next((v for v in info.versions if v.is_current), None)
    if current is None:
        raise ApiError(409, f"model '{name}' has no current version to predict with")
    return _render(
        request,
        "predict.html",
        page="predict",
        name=info.name,
        version=current.version,
        features=current.metadata.get("features", []),
        target=current.metadata.get("target_variable", ""),
    )


@router.get(f"{UI}/server")
def server_page(request: Request) -> HTMLResponse:
    return _render(request, "server.html", page="server")


@router.get(f"{UI}/static/{{file_name}}")
def static_file(file_name: str) -> Response:
    """The console's own script and style sheet: a fixed list, so no path reaches the disk."""
    media_type = STATIC_FILES.get(file_name)
    if media_type is None:
        raise ApiError(404, f"no console file named {file_name!r}")
    return Response(
        (STATIC_DIR / file_name).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
