"""Refuses oversized bodies: from their Content-Length before a byte is read, and by
counting the bytes of bodies sent without one (chunked)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_api.errors import ApiError, send_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_upload_bytes: int, max_json_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_length = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
        is_upload = content_type is not None and content_type.startswith(b"multipart/")
        limit = self.max_upload_bytes if is_upload else self.max_json_bytes
        if content_length is not None:
            if not content_length.isdigit():
                await send_error(scope, send, 400, "Content-Length must be a whole number of bytes")
                return
            if int(content_length) > limit:
                kind = "an upload" if is_upload else "a request body"
                await send_error(
                    scope,
                    send,
                    413,
                    f"{kind} of {int(content_length)} bytes is over the limit of {limit} bytes"
                    + (
                        "; set FASTML_MAX_UPLOAD_BYTES"
                        if is_upload
                        else "; send large inputs as a CSV to /predict/csv"
                    ),
                )
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, _counting(receive, limit), send)


def _counting(receive: Receive, limit: int) -> Receive:
    """A receive that fails with 413 once a body without Content-Length passes `limit`."""
    received = 0

    async def receive_counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(413, f"the request body is over the limit of {limit} bytes")
        return message

    return receive_counted
