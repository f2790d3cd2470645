"""Swagger UI and ReDoc pages whose scripts and styles this server serves itself (no CDN)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
# The swagger-ui-dist and redoc builds that the fastapi-offline package ships and updates.
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
# Swagger UI would ask validator.swagger.io to check the schema: nothing leaves the server.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
# And the browser is told so: ReDoc's sidebar logo (cdn.redoc.ly) is never fetched, the
# bundle then drops the image. Inline script and styles: FastAPI's pages and both UIs use them.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    )
)


def install_api_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc from local assets; build the app with docs_url=redoc_url=None.

    The pages, assets and schema sit behind the same basic auth as the API, so the browser
    asks for a user and password once and sends them with every later request.
    """
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets = _assets_url(request)
        return _served_here(
            get_swagger_ui_html(
                openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                swagger_css_url=f"{assets}/swagger-ui.css",
                swagger_favicon_url=f"{assets}/favicon.png",
                swagger_ui_parameters={
                    **SWAGGER_UI_PARAMETERS,
                    **(app.swagger_ui_parameters or {}),
                },
            )
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        assets = _assets_url(request)
        return _served_here(
            get_redoc_html(
                openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{assets}/redoc.standalone.js",
                redoc_favicon_url=f"{assets}/favicon.png",
                with_google_fonts=False,
            )
        )


def _assets_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{ASSETS_URL}"


def _served_here(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
