"""One JSON error shape for every failure, and the table mapping ML errors to statuses.

Every error answer looks like:

    {"error": {"status": 422, "code": "invalid_dataset", "message": "...", "details": [...]},
     "request_id": "..."}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope, Send

from ML import errors
from rest_api.body_errors import explain_body_error
from rest_api.route_lookup import allowed_methods, path_meant

logger = logging.getLogger(__name__)

# Each domain error's status and code. The codes are part of the API (clients switch on
# them), so they are written out here: renaming a class cannot change one.
ANSWER_BY_ERROR: dict[type[errors.FastMLError], tuple[int, str]] = {
    errors.InvalidName: (422, "invalid_name"),
    errors.InvalidDataset: (422, "invalid_dataset"),
    errors.DatasetTooLarge: (413, "dataset_too_large"),
    errors.UnknownEstimator: (422, "unknown_estimator"),
    errors.InvalidParams: (422, "invalid_params"),
    errors.InvalidInput: (422, "invalid_input"),
    errors.ModelNotFound: (404, "model_not_found"),
    errors.ModelConflict: (409, "model_conflict"),
    errors.ModelUnusable: (409, "model_unusable"),
    errors.JobNotFound: (404, "job_not_found"),
    errors.JobConflict: (409, "job_conflict"),
    errors.JobResultUnavailable: (404, "job_result_unavailable"),
    errors.StorageFull: (507, "storage_full"),
    errors.StoreUnavailable: (503, "store_unavailable"),
}
UNLISTED_ERROR_ANSWER = (400, "bad_request")
# A store or broker that is away for a moment (a Redis restart, a remount): when to try again.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5

CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "content_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An HTTP-level failure raised by the REST layer itself (auth, content type, limits).

    An HTTPException, so that FastAPI lets it through when it is raised while FastAPI reads
    a body (a body over the limit): FastAPI turns any other exception there into a bare 400.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def status_and_code(exc: errors.FastMLError) -> tuple[int, str]:
    """From ANSWER_BY_ERROR, for the error's class or its nearest listed base class."""
    for cls in type(exc).__mro__:
        answer = ANSWER_BY_ERROR.get(cls)
        if answer is not None:
            return answer
    return UNLISTED_ERROR_ANSWER


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: list[dict[str, Any]] | None = None,
    request_id: str | None = None,
) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "status": status,
                "code": code or CODE_BY_STATUS.get(status, "error"),
                "message": message,
                "details": details or [],
            },
            "request_id": request_id,
        }
    )


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer from an ASGI middleware, before the app ran; closes the connection so a
    client still streaming a body it was refused does not keep it busy."""
    body = error_body(status, message, request_id=scope.get("state", {}).get("request_id"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


INTERNAL_ERROR_MESSAGE = "internal error; the server log has the details under this request_id"


def client_error_body(
    exc: errors.FastMLError | ApiError, request_id: str | None
) -> tuple[int, bytes]:
    """Status and JSON body for an error the client can fix."""
    if isinstance(exc, ApiError):
        body = error_body(exc.status, exc.message, details=exc.details, request_id=request_id)
        return exc.status, body
    status, code = status_and_code(exc)
    message, details = exc.message, exc.details
    if isinstance(exc, errors.ModelUnusable):
        message, details = unusable_model_answer(exc)
    body = error_body(status, message, code=code, details=details, request_id=request_id)
    return status, body


def unusable_model_answer(exc: errors.ModelUnusable) -> tuple[str, list[dict[str, Any]]]:
    """An unusable version's message and details, plus the call that rolls back if any."""
    if exc.rollback_version is None:
        return exc.message, exc.details
    path = f"/models/{exc.model_name}/current"
    body = {"version": exc.rollback_version}
    call = f"PUT {path} {orjson.dumps(body).decode()}"
    rollback = {"rollback": {"method": "PUT", "path": path, "body": body}}
    return f"{exc.message} with {call}", [*exc.details, rollback]


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    request_id = request.scope.get("state", {}).get("request_id")
    body = error_body(status, message, code=code, details=details, request_id=request_id)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.FastMLError)
    @app.exception_handler(ApiError)
    async def client_error(request: Request, exc: errors.FastMLError | ApiError) -> Response:
        request_id = request.scope.get("state", {}).get("request_id")
        status, body = client_error_body(exc, request_id)
        headers = exc.headers if isinstance(exc, ApiError) else None
        if status == 503 and headers is None:
            headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = [
            {
                "field": ".".join(str(part) for part in error["loc"] if part != "body"),
                "error": error["msg"],
            }
            for error in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['error']}" for d in details[:10])
        return error_response(request, 422, f"invalid request: {summary}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        explained = explain_body_error(exc)
        if explained is not None:
            status, message = explained
            # The client may still be sending the body it was refused.
            return error_response(request, status, message, headers={"connection": "close"})
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = exc.headers
        method, path = request.method, request.url.path
        if exc.status_code == 404 and message == "Not Found":
            meant = path_meant(request.app.router.routes, method, path)
            hint = f"did you mean {meant}?" if meant is not None else "see /docs"
            message = f"no route {method} {path}; {hint}"
        elif exc.status_code == 405:
            allowed = allowed_methods(request.app.router.routes, path)
            message = f"{method} is not allowed on {path}; it allows {', '.join(allowed)}"
            headers = {"Allow": ", ".join(allowed)}
        return error_response(request, exc.status_code, message, headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        # Starlette answers this from its outermost layer, outside the request log
        # middleware that adds X-Request-ID to every other answer: add it here.
        request_id = request.scope.get("state", {}).get("request_id")
        headers = {"x-request-id": request_id} if request_id else None
        return error_response(request, 500, INTERNAL_ERROR_MESSAGE, headers=headers)
