"""HTTP/1.1 connections with limits: uvicorn's httptools protocol, bounded in size and time.

Uvicorn ignores gunicorn's `limit_request_*` settings and only times out a connection after
a response, so without this a client could send a 16 MiB header, 100,000 header lines, or
one byte a minute for ever. `LimitedHttpProtocol` counts what the parser sees and arms a
timer only while a request is incomplete across reads: a request that arrives in one read
(nearly all of them) costs a few attribute updates and no timer.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from rest_api.errors import error_body
from rest_api.http_limits import HttpLimits

# A connection idle when the server stops (or a worker recycles) may have a request on the
# wire: it gets this long to arrive, and is answered with `Connection: close`.
IDLE_DRAIN_SECONDS = 1.0
# Transfer codings a request body may use: llhttp decodes chunked, and nothing else.
SUPPORTED_TRANSFER_CODINGS = frozenset({b"chunked"})
SUPPORTED_HTTP_VERSIONS = frozenset({"1.1", "1.0"})


class RequestRejected(Exception):
    """Raised inside a parser callback: the request is answered with this error, then closed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._is_reading_head = False
        self._is_draining = False
        self._head_bytes = 0
        self._head_size = 0
        self._max_request_line = self.limits.max_request_line
        self._max_header_count = self.limits.max_header_count
        self._max_header_field = self.limits.max_header_field
        self._max_header_bytes = self.limits.max_header_bytes
        self._body_bytes = 0
        self._body_started = 0.0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Uvicorn arms the idle timer only after a response: a client that connects and
        # says nothing would hold the connection for ever.
        self._arm_idle_timer(self.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._cancel_head_deadline()
        self._cancel_body_deadline()

    def data_received(self, data: bytes) -> None:
        # Unlike uvicorn, bytes do not stop the idle timer: a request beginning does, so
        # blank lines cannot keep a connection open.
        # Reset by on_message_begin: only the head under way is counted, give or take one read.
        self._head_bytes += len(data)
        if self._body_deadline is not None:
            self._body_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's exception (ours, or uvicorn's on a bad URL) is the context.
            rejection = exc.__context__
            if not isinstance(rejection, RequestRejected):
                rejection = RequestRejected(
                    400,
                    "bad_request",
                    f"invalid HTTP request ({rejection or exc}); send well-formed HTTP/1.1",
                )
            self._reject(rejection)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # The request is incomplete after this read: only now do its clocks start.
        if self._is_reading_head:
            if self._head_bytes > self.limits.max_header_bytes:
                self._reject(self._head_too_large())
            elif self._head_deadline is None:
                self._head_deadline = self.loop.call_later(
                    self.limits.header_timeout, self._on_head_deadline
                )
        elif self._body_deadline is None and self.cycle is not None and self.cycle.more_body:
            self._body_started = self.loop.time()
            self._body_bytes = 0
            self._body_deadline = self.loop.call_later(
                self.limits.body_timeout, self._on_body_deadline
            )

    def shutdown(self) -> None:
        """Stop after what is under way, without cutting a request that is on its way: an
        idle connection gets a short grace, and every answer from now on says `close`."""
        self._is_draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self._is_reading_head:
            self._arm_idle_timer(min(IDLE_DRAIN_SECONDS, self.timeout_keep_alive))

    # Parser callbacks

    def on_message_begin(self) -> None:
        if self.timeout_keep_alive_task is not None:  # a request is coming: no longer idle
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().on_message_begin()
        self._is_reading_head = True
        self._head_bytes = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self._max_request_line:
            raise RequestRejected(
                414,
                "uri_too_long",
                f"the request target is longer than {self.limits.max_request_line} bytes; "
                "send long input in the request body",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        # Runs for every header of every request: plain attributes, one test on the way.
        size = len(name) + len(value)
        if size > self._max_header_field or len(self.headers) >= self._max_header_count:
            raise self._header_rejection(size)
        self._head_size += size
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"transfer-encoding":
            _check_transfer_codings(value)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._is_reading_head = False
        if self._head_deadline is not None:
            self._cancel_head_deadline()
        if self._body_deadline is not None:  # the previous request's: this body starts afresh
            self._cancel_body_deadline()
        version = self.parser.get_http_version()
        if version not in SUPPORTED_HTTP_VERSIONS:
            raise RequestRejected(
                505,
                "http_version_not_supported",
                f"HTTP/{version} is not supported; send HTTP/1.1 (or HTTP/1.0)",
            )
        # A head that came in one read was not counted by data_received: count it exactly
        # (4 bytes per line for ": " and CRLF).
        if self._head_size + 4 * len(self.headers) + len(self.url) > self._max_header_bytes:
            raise self._head_too_large()
        super().on_headers_complete()
        if self._is_draining:
            self.cycle.keep_alive = False

    # Deadlines

    def _is_reading_body(self) -> bool:
        # Uvicorn's cycle knows: its body is incomplete until on_message_complete.
        return self.cycle is not None and self.cycle.more_body and not self._is_reading_head

    def _on_head_deadline(self) -> None:
        self._head_deadline = None
        if self._is_reading_head:
            self._reject(
                RequestRejected(
                    408,
                    "request_timeout",
                    f"the request headers did not arrive within {self.limits.header_timeout:g} s",
                )
            )

    def _on_body_deadline(self) -> None:
        self._body_deadline = None
        if not self._is_reading_body() or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            # The app is not reading yet (or has not asked for the body that the client
            # holds back until "100 Continue"): the wait is ours, not the client's.
            self._body_started, self._body_bytes = now, 0
            self._body_deadline = self.loop.call_later(
                self.limits.body_timeout, self._on_body_deadline
            )
            return
        deadline = (
            self._body_started
            + self.limits.body_timeout
            + self._body_bytes / self.limits.body_min_rate
        )
        if now < deadline:
            self._body_deadline = self.loop.call_later(deadline - now, self._on_body_deadline)
            return
        self._reject(
            RequestRejected(
                408,
                "request_timeout",
                f"the request body arrived slower than {self.limits.body_min_rate:g} bytes/s "
                f"after {self.limits.body_timeout:g} s",
            )
        )

    def _arm_idle_timer(self, seconds: float) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            seconds, self.timeout_keep_alive_handler
        )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _cancel_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    # Answers

    def send_400_response(self, msg: str) -> None:
        """Uvicorn's own protocol errors, answered in the project's JSON error shape."""
        self._reject(RequestRejected(400, "bad_request", msg))

    def _reject(self, rejection: RequestRejected) -> None:
        """Answer an error and close: the request was never handed to the app, or the app
        is waiting for a body that will not come (it then sees a disconnect)."""
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
        self.logger.warning("%s: %d %s", client, rejection.status, rejection.message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started or not self._is_reading_body():
                # An answer is on its way (or a pipelined request broke): it cannot be
                # followed by another.
                self.transport.close()
                return
            cycle.disconnected = True
            cycle.message_event.set()
        body = error_body(rejection.status, rejection.message, code=rejection.code)
        head = [_status_line(rejection.status)]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _header_rejection(self, size: int) -> RequestRejected:
        if size > self._max_header_field:
            return self._fields_too_large(
                f"a header line is longer than {self._max_header_field} bytes"
            )
        return self._fields_too_large(f"more than {self._max_header_count} header lines")

    def _fields_too_large(self, what: str) -> RequestRejected:
        return RequestRejected(
            431, "request_header_fields_too_large", f"{what}; send fewer or shorter headers"
        )

    def _head_too_large(self) -> RequestRejected:
        return self._fields_too_large(
            f"the request head is larger than {self.limits.max_header_bytes} bytes"
        )


def _check_transfer_codings(value: bytes) -> None:
    for coding in value.split(b","):
        coding = coding.strip().lower()
        if coding not in SUPPORTED_TRANSFER_CODINGS:
            shown = coding.decode("latin-1")
            raise RequestRejected(
                501,
                "not_implemented",
                f"Transfer-Encoding '{shown}' is not supported; send the body as it is, with "
                "Content-Length or Transfer-Encoding: chunked alone",
            )


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode("ascii"))
