"""What the plain ASGI routes (rest_api/predict_json.py, rest_api/compat_fast.py) share: the
route class, reading the body, sending a JSON answer."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from rest_api.request_headers import first_header

JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class PlainRoute(Route):
    """A Starlette route to a plain ASGI endpoint that records itself in the scope, as
    FastAPI's routes do, so the request log and /metrics label its requests with its path."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope

    def handle(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        # The endpoint's own coroutine, not one awaiting it: a coroutine layer less on the
        # hot path (the router awaits what this returns). Another method: Route's 405.
        if scope["method"] in self.methods:  # type: ignore[operator]
            return self.app(scope, receive, send)
        return super().handle(scope, receive, send)


async def read_body(scope: Scope, receive: Receive, max_length: int | None = None) -> bytes | None:
    """The whole body; None if the client disconnects first. With `max_length`: None, unread,
    unless the Content-Length says at most `max_length` bytes (a chunked body has none)."""
    if max_length is not None:
        length = first_header(scope, b"content-length")
        if length is None or not length.isdigit() or int(length) > max_length:
            return None
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body  # the usual case: one message
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def send_json(send: Send, status: int, body: bytes) -> None:
    """Answer a JSON body, with the headers FastAPI's JSONResponse sends, in its order."""
    headers = [(b"content-length", b"%d" % len(body)), JSON_CONTENT_TYPE]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
