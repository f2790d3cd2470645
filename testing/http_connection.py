"""A keep-alive HTTP/1.1 client connection for the load client: one request at a time.

Hand-written rather than aiohttp because the load client shares the machine's cores with the
server it measures, so its CPU per request is taken from the server: against
testing/ceiling_app.py (c=64, 50,000 requests, alternating runs) aiohttp's client spent 21-26 s
of CPU per 100,000 requests (with read() or release(), with or without its automatic
headers), this connection 4.2-5.1 s. It writes pre-encoded request bytes and leaves the
parsing of the answer to httptools (llhttp, the parser uvicorn uses); it reads the status and
skips the body."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools


class AnswerIncomplete(Exception):
    """The server closed the connection after part of an answer: its end never came."""


class BadAnswer(Exception):
    """The server's bytes are not an HTTP/1.1 answer."""


class Disconnected(ConnectionError):
    """The server closed the connection before the answer's first byte."""


@dataclass(frozen=True)
class Target:
    """Where the requests go: host, port and TLS, from a URL."""

    host: str
    port: int
    ssl_context: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        is_tls = parts.scheme == "https"
        return cls(
            host=parts.hostname or "",
            port=parts.port or (443 if is_tls else 80),
            ssl_context=ssl.create_default_context() if is_tls else None,
        )


def encode_request(url: str, headers: dict[str, str], body: bytes) -> bytes:
    """A whole POST request, head and body, as the bytes written to the socket."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {parts.netloc.rpartition('@')[2]}",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _AnswerReader(asyncio.Protocol):
    """Feeds the answer's bytes to httptools; resolves the waiting request with its status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.is_open = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[int] | None = None
        self._has_started = False  # a byte of the current answer has arrived
        self._has_head = False
        self._has_length = False  # Content-Length or chunked: the body's end is in the bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.is_open = True

    def send(self, request: bytes, waiter: asyncio.Future[int]) -> None:
        assert self.transport is not None  # connection_made came first
        self._waiter = waiter
        self._has_started = self._has_head = self._has_length = False
        self.transport.write(request)

    def eof_received(self) -> None:
        # The transport closes itself next, and calls connection_lost later: no request may
        # be written in between.
        self.is_open = False

    def data_received(self, data: bytes) -> None:
        self._has_started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadAnswer(str(exc)))

    # httptools calls these (only the ones defined: no per-byte callback for the body).
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._has_length = True

    def on_headers_complete(self) -> None:
        self._has_head = True

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_open = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is not None:
            self._fail(exc)
        elif self._has_head and not self._has_length:
            # An answer without a length ends when the connection does (HTTP/1.0 style).
            self._waiter = None
            waiter.set_result(self._parser.get_status_code())
        elif self._has_started:
            self._fail(AnswerIncomplete("the connection closed in the middle of an answer"))
        else:
            self._fail(Disconnected("the server closed the connection without answering"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.is_open = False
        if self.transport is not None:
            self.transport.abort()


class KeepAliveConnection:
    """Sends requests one after another over one connection, reopened when the server drops it.

    A failed request (timeout, reset, bad answer) closes the connection: its state is unknown.
    """

    def __init__(self, target: Target, timeout: float) -> None:
        self._target = target
        self._timeout = timeout
        self._reader: _AnswerReader | None = None
        self._loop = asyncio.get_running_loop()

    async def exchange(self, request: bytes) -> int:
        """Send `request`; the answer's status. Raises OSError (TimeoutError too) or the above."""
        loop = self._loop
        deadline = loop.time() + self._timeout
        reader = self._reader
        if reader is None or not reader.is_open:
            reader = await self._connect(deadline)
        waiter: asyncio.Future[int] = loop.create_future()
        timer = loop.call_at(deadline, _time_out, waiter)
        try:
            reader.send(request, waiter)
            return await waiter
        except BaseException:
            reader.close()  # cancelled or failed: whatever is in flight is abandoned
            raise
        finally:
            timer.cancel()

    async def _connect(self, deadline: float) -> _AnswerReader:
        target = self._target
        async with asyncio.timeout_at(deadline):
            _, reader = await self._loop.create_connection(
                _AnswerReader,
                target.host,
                target.port,
                ssl=target.ssl_context,
                server_hostname=target.host if target.ssl_context else None,
            )
        self._reader = reader
        return reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _time_out(waiter: asyncio.Future[int]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
