"""The prediction hot path, answered at the edge of the app.

FastAPI's per-request machinery (its middleware, dependency solving, response classes)
costs more than a compiled forest's prediction. This middleware answers
POST /models/{name}/predict with the very same `answer_predict_json` the documented FastAPI
route uses (auth already ran; the role is checked here), so behaviour is identical and only
overhead goes. FASTML_LEAN_PREDICT=false sends those requests through FastAPI instead.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ML.errors import FastMLError
from rest_api.errors import INTERNAL_ERROR_MESSAGE, ApiError, client_error_body, error_body
from rest_api.routes import predictions
from rest_api.routes.predictions import answer_predict_json
from rest_api.services import Services
from rest_api.users import Role

logger = logging.getLogger(__name__)

PREDICT_PATH = "/models/{name}/predict"
JSON_HEADERS = [(b"content-type", b"application/json")]
TRUE_VALUES = {"true", "1", "yes", "on"}
FALSE_VALUES = {"false", "0", "no", "off"}


class LeanPredictMiddleware:
    """Answers POST /models/{name}/predict itself; passes every other request on."""

    def __init__(self, app: ASGIApp, fastml_app: FastAPI) -> None:
        self.app = app
        self.fastml_app = fastml_app
        # The documented route: the request log labels lean answers with its path.
        self.route = next(
            route
            for route in predictions.router.routes
            if getattr(route, "path", None) == PREDICT_PATH
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and path.startswith("/models/")
            and path.endswith("/predict")
        ):
            name = path[len("/models/") : -len("/predict")]
            if name and "/" not in name:
                scope["route"] = self.route
                await lean_predict(scope, receive, send, self.fastml_app.state.services, name)
                return
        await self.app(scope, receive, send)


async def lean_predict(
    scope: Scope, receive: Receive, send: Send, services: Services, name: str
) -> None:
    state = scope["state"]
    try:
        user = state.get("user")
        if user is None or not user.role.allows(Role.PREDICTOR):
            raise ApiError(403, f"user '{user.name if user else '-'}' needs the predictor role")
        content_type = None
        for header_name, value in scope["headers"]:
            if header_name == b"content-type":
                content_type = value.decode("latin-1")
                break
        answer = await answer_predict_json(
            services,
            name,
            await _read_body(receive),
            content_type,
            _proba_flag(scope["query_string"]),
        )
        status = 200
    except (FastMLError, ApiError) as error:
        status, answer = client_error_body(error, state.get("request_id"))
    except Exception:
        logger.exception("internal error on POST %s", scope["path"])
        status = 500
        answer = error_body(status, INTERNAL_ERROR_MESSAGE, request_id=state.get("request_id"))
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body  # the usual case: one small message
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _proba_flag(query_string: bytes) -> bool:
    if not query_string:
        return False
    for key, value in parse_qsl(query_string.decode("latin-1")):
        if key == "proba":
            if value.lower() in TRUE_VALUES:
                return True
            if value.lower() in FALSE_VALUES:
                return False
            raise ApiError(422, f"proba must be true or false, not {value!r}")
    return False
