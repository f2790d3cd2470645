"""Per-request bookkeeping: request id, one log line, Prometheus samples."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_api.metrics import HTTP_LATENCY, HTTP_REQUESTS

logger = logging.getLogger("fastml.requests")
MAX_REQUEST_ID_LENGTH = 128


class RequestLogMiddleware:
    """Outermost layer: gives every request an id and logs method, path, status, latency, user.

    Never logs bodies, query strings or headers, so no password or CSV cell reaches the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            user = state.get("user")
            logger.info(
                "%s %s %d %.2fms user=%s request_id=%s",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                user.name if user is not None else "-",
                request_id,
            )
            HTTP_REQUESTS.labels(scope["method"], route_path, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], route_path).observe(elapsed)


def _incoming_request_id(scope: Scope) -> str | None:
    """Keep a caller's X-Request-ID when it is short and printable, for tracing across services."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= MAX_REQUEST_ID_LENGTH and text.isprintable() and " " not in text:
                return text
            return None
    return None
