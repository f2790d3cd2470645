"""The load client's keep-alive connection against a real HTTP server on 127.0.0.1.

The peer is the standard library's http.server speaking HTTP/1.1, scripted per path to answer
the ways a server can: with a length, chunked, until the connection closes, cut in the middle,
not at all, late, or with bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from testing.async_predictions import error_kind, loop_factory
from testing.http_connection import (
    AnswerIncomplete,
    BadAnswer,
    Disconnected,
    KeepAliveConnection,
    Target,
    encode_request,
)
from testing.servers import free_port

T = TypeVar("T")
BODY = b'{"rows": [{"x": 1}]}'
SLOW_SECONDS = 1.0


@dataclass
class Peer:
    url: str
    connections: int = 0
    bodies: list[bytes] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)


def make_handler(peer: Peer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive unless an answer says otherwise

        def setup(self) -> None:
            super().setup()
            peer.connections += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            peer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            peer.authorizations.append(self.headers["Authorization"])
            answer = ANSWERS.get(self.path)
            if answer is None:
                self.send_error(404)
                return
            answer(self)

    return Handler


def answer_with_length(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")


def answer_chunked(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for chunk in (b"first ", b"second ", b"third"):
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.wfile.flush()
    handler.wfile.write(b"0\r\n\r\n")


def answer_until_close(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe body ends at EOF")
    handler.close_connection = True


def answer_and_close(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    handler.close_connection = True


def cut_mid_answer(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it")
    handler.close_connection = True


def close_without_answer(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.close_connection = True


def answer_garbage(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"this is not HTTP\r\n\r\n")
    handler.close_connection = True


def answer_late(handler: http.server.BaseHTTPRequestHandler) -> None:
    time.sleep(SLOW_SECONDS)
    answer_with_length(handler)


ANSWERS: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {
    "/length": answer_with_length,
    "/chunked": answer_chunked,
    "/until-close": answer_until_close,
    "/close": answer_and_close,
    "/cut": cut_mid_answer,
    "/silent": close_without_answer,
    "/garbage": answer_garbage,
    "/late": answer_late,
}


@pytest.fixture
def peer() -> Iterator[Peer]:
    port = free_port()
    peer = Peer(f"http://127.0.0.1:{port}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(peer))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()


def run(coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """On the event loop the load client runs on (uvloop when installed)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coroutine())


def exchange_all(peer: Peer, paths: list[str], timeout: float = 10.0) -> list[int | str]:
    """Each path's status, or the error kind the load client counts, over one connection."""

    async def exchange() -> list[int | str]:
        connection = KeepAliveConnection(Target.from_url(peer.url), timeout)
        results: list[int | str] = []
        try:
            for path in paths:
                request = encode_request(peer.url + path, {"Authorization": "Basic eDp5"}, BODY)
                try:
                    results.append(await connection.exchange(request))
                except (OSError, AnswerIncomplete, BadAnswer) as exc:
                    results.append(error_kind(exc))
        finally:
            connection.close()
        return results

    return run(exchange)


def test_requests_reuse_one_connection(peer: Peer) -> None:
    assert exchange_all(peer, ["/length"] * 5) == [201] * 5
    assert peer.connections == 1
    assert peer.bodies == [BODY] * 5
    assert peer.authorizations == ["Basic eDp5"] * 5


def test_a_chunked_answer_is_read_to_its_end(peer: Peer) -> None:
    assert exchange_all(peer, ["/chunked", "/length", "/chunked"]) == [200, 201, 200]
    assert peer.connections == 1


def test_an_answer_without_a_length_ends_with_the_connection(peer: Peer) -> None:
    assert exchange_all(peer, ["/until-close", "/length"]) == [200, 201]
    assert peer.connections == 2


def test_connection_close_makes_the_next_request_reconnect(peer: Peer) -> None:
    assert exchange_all(peer, ["/close", "/close", "/length"]) == [200, 200, 201]
    assert peer.connections == 3


def test_an_answer_cut_in_the_middle_is_counted_and_the_next_reconnects(peer: Peer) -> None:
    assert exchange_all(peer, ["/cut", "/length"]) == ["answer cut", 201]
    assert peer.connections == 2


def test_a_close_without_answer_is_a_disconnect(peer: Peer) -> None:
    assert exchange_all(peer, ["/length", "/silent", "/length"]) == [201, "disconnected", 201]
    assert peer.connections == 2


def test_bytes_that_are_not_http_are_a_bad_answer(peer: Peer) -> None:
    assert exchange_all(peer, ["/garbage", "/length"]) == ["bad answer", 201]


def test_a_late_answer_times_out_and_the_next_request_reconnects(peer: Peer) -> None:
    assert exchange_all(peer, ["/late", "/length"], timeout=SLOW_SECONDS / 4) == ["timeout", 201]
    assert peer.connections == 2


def test_a_refused_connection_is_counted() -> None:
    with socket.socket() as unbound:  # a port nobody listens on: bound, never listening
        unbound.bind(("127.0.0.1", 0))
        port = unbound.getsockname()[1]
        assert exchange_all(Peer(f"http://127.0.0.1:{port}"), ["/length"]) == ["connection refused"]


def test_the_request_bytes_name_the_host_and_the_query() -> None:
    request = encode_request("http://user@localhost:8000/a/b?c=d", {"X-One": "1"}, b"xyz")
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /a/b?c=d HTTP/1.1",
        b"Host: localhost:8000",
        b"X-One: 1",
        b"Content-Length: 3",
    ]
    assert body == b"xyz"


def test_the_error_kinds_are_distinct() -> None:
    kinds = {
        error_kind(exc)
        for exc in (
            TimeoutError(),
            ConnectionRefusedError(),
            ConnectionResetError(),
            Disconnected(),
            AnswerIncomplete(),
            BadAnswer(),
        )
    }
    assert kinds == {"timeout", "connection refused", "disconnected", "answer cut", "bad answer"}
