"""The HTTP stack ceiling: a raw ASGI app that answers every request with a constant prediction.

    gunicorn -c gunicorn/gunicorn-config.py testing.ceiling_app:app

Same gunicorn config, same Uvicorn workers as fastml, but no framework, no auth check and no
model: whatever fastml's predict route does on top of the HTTP stack costs the difference
between this app's throughput and fastml's. It reads the whole request body (as fastml must)
and ignores the method, the path and the Authorization header, so a load tool can send it the
very request it sends fastml. testing/benchmark.py measures both side by side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ANSWER = b'{"model":"iris","version":1,"predictions":["setosa"]}'
ANSWER_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ANSWER)).encode("ascii")),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _answer(receive, send)
    # Any other scope (a websocket) is refused by returning without accepting it.


async def _answer(receive: Receive, send: Send) -> None:
    # The body is read to its end: a server that skipped it would measure less than fastml does.
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more_body = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": ANSWER_HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Answering the lifespan protocol keeps Uvicorn from logging that it is unsupported.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
