"""HTTP limits on real gunicorn, over raw sockets (issue 7, points 4, 7, 8 and 10).

Each case is what an attacker sent: a 20 KB request line, 100,000 headers, a 16 MiB header,
headers or a body dribbled a byte at a time, connections left idle. The server runs with
one-second deadlines so the timeouts show quickly.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.servers import ADMIN, Server, start_server, stop_server
from tests.system.http_wire import RawAnswer, exchange, request_bytes

pytestmark = pytest.mark.system

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
BODY_MIN_RATE = 100.0
KEEPALIVE = 1
# A deadline is met when the server acts within it plus this (a shared, loaded machine).
SLACK_SECONDS = 4.0
AUTHORIZATION = "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path: Path = tmp_path_factory.mktemp("http-limits")
    running = start_server(
        tmp_path,
        {
            "FASTML_WORKERS": "1",
            "FASTML_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "FASTML_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "FASTML_BODY_MIN_RATE": str(BODY_MIN_RATE),
            "FASTML_KEEPALIVE": str(KEEPALIVE),
        },
    )
    try:
        yield running
    finally:
        stop_server(running)


def assert_json_error(answer: RawAnswer, status: int, *words: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    assert answer.headers["connection"] == "close", answer
    error = answer.json()["error"]
    assert error["status"] == status
    for word in words:
        assert word in error["message"], error
    assert answer.closed, "the server must close the connection after refusing a request"


def test_a_20_kb_request_line_is_refused_with_414(server: Server) -> None:
    answer, _ = exchange(server.url, [request_bytes("GET", "/health/live?q=" + "a" * 20_000)])
    assert_json_error(answer, 414, "longer than 8190 bytes")


def test_100000_headers_are_refused_with_431(server: Server) -> None:
    headers = [(f"X-Header-{i}", "1") for i in range(100_000)]
    answer, _ = exchange(server.url, [request_bytes("GET", "/models", headers)])
    assert_json_error(answer, 431, "more than 100 header lines")


def test_a_16_mib_header_is_refused_before_it_is_read(server: Server) -> None:
    head = request_bytes("GET", "/models").removesuffix(b"\r\n")
    huge = [head + b"X-Huge: "] + [b"a" * (1 << 20)] * 16 + [b"\r\n\r\n"]
    answer, sent_all = exchange(server.url, huge)
    assert_json_error(answer, 431, "the request head is larger than 32768 bytes")
    assert not sent_all, "the server read the whole 16 MiB before answering"


def test_a_head_over_the_byte_limit_is_refused_with_431(server: Server) -> None:
    # Five headers of 8,000 bytes: each within the per-line limit, 40 KB together.
    headers = [(f"X-Big-{i}", "b" * 8000) for i in range(5)]
    answer, _ = exchange(server.url, [request_bytes("GET", "/health/live", headers)])
    assert_json_error(answer, 431, "larger than 32768 bytes")


def test_a_request_within_the_limits_is_served(server: Server) -> None:
    headers = [(f"X-Fine-{i}", "v" * 100) for i in range(90)] + [("Connection", "close")]
    answer, _ = exchange(server.url, [request_bytes("GET", "/health/live", headers)])
    assert answer.status == 200, answer
    assert "server" not in answer.headers, "no `server: uvicorn` header"


def test_headers_sent_a_byte_at_a_time_get_408_at_the_deadline(server: Server) -> None:
    request = request_bytes("GET", "/models", [("Authorization", AUTHORIZATION)] * 3)
    pieces = [request[i : i + 1] for i in range(len(request))]
    answer, sent_all = exchange(server.url, pieces, pause=0.1, wait=HEADER_TIMEOUT + SLACK_SECONDS)
    assert_json_error(answer, 408, "request headers did not arrive within 1 s")
    assert not sent_all
    assert answer.seconds >= HEADER_TIMEOUT


def json_body_head(body: bytes, *headers: tuple[str, str]) -> bytes:
    """The head of an authorised JSON request whose `body` is sent separately, to a route
    that reads its whole body before anything else (FastAPI parses a JSON body before the
    handler runs; the predict route would answer 404 for the missing model unread)."""
    return request_bytes(
        "PUT",
        "/models/iris/current",
        [
            ("Authorization", AUTHORIZATION),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *headers,
        ],
    )


def test_a_body_slower_than_the_minimum_rate_gets_408(server: Server) -> None:
    body = b'{"rows": [' + b" " * 1000 + b"]}"
    head = json_body_head(body)
    # 10 bytes every 0.2 s: 50 bytes/s, half the minimum rate.
    pieces = [head] + [body[i : i + 10] for i in range(0, len(body), 10)]
    answer, sent_all = exchange(
        server.url, pieces, pause=0.2, wait=BODY_TIMEOUT * 3 + SLACK_SECONDS
    )
    assert_json_error(answer, 408, "slower than 100 bytes/s")
    assert not sent_all


def test_a_body_at_a_steady_pace_is_read_to_its_end(server: Server) -> None:
    body = b'{"rows": [' + b" " * 380 + b"]}"
    head = json_body_head(body, ("Connection", "close"))
    # 50 bytes every 0.25 s: 200 bytes/s, twice the minimum rate, over 2 s.
    pieces = [head] + [body[i : i + 50] for i in range(0, len(body), 50)]
    answer, sent_all = exchange(server.url, pieces, pause=0.25, wait=10 + SLACK_SECONDS)
    assert sent_all
    # The app read the body and answered it (a 422: no version in it): not a timeout.
    assert answer.status is not None and answer.status != 408, answer
    assert answer.json()["error"]["status"] == answer.status


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    answer, _ = exchange(server.url, [], wait=KEEPALIVE + SLACK_SECONDS)
    assert answer.closed and answer.status is None and answer.body == b"", answer
    assert answer.seconds >= KEEPALIVE * 0.9


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(server: Server) -> None:
    answer, _ = exchange(
        server.url, [request_bytes("GET", "/health/live")], wait=KEEPALIVE + SLACK_SECONDS
    )
    assert answer.status == 200, answer
    assert answer.headers.get("connection") != "close"
    assert answer.closed, "an idle keep-alive connection stayed open"


def test_blank_lines_do_not_keep_a_connection_alive(server: Server) -> None:
    pieces = [b"\r\n"] * 40  # 40 x 0.1 s = 4 s of noise, four keep-alive timeouts
    answer, sent_all = exchange(server.url, pieces, pause=0.1, wait=4 + SLACK_SECONDS)
    assert answer.closed and not sent_all, answer


def test_a_gzip_transfer_coding_is_refused_with_501(server: Server) -> None:
    request = request_bytes(
        "POST",
        "/models/iris/predict",
        [
            ("Authorization", AUTHORIZATION),
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "gzip, chunked"),
        ],
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    answer, _ = exchange(server.url, [request])
    assert_json_error(answer, 501, "Transfer-Encoding 'gzip' is not supported")


def test_an_http_2_request_line_is_refused_with_505(server: Server) -> None:
    request = request_bytes("GET", "/health/live").replace(b"HTTP/1.1", b"HTTP/2.0", 1)
    answer, _ = exchange(server.url, [request])
    assert_json_error(answer, 505, "HTTP/2.0 is not supported")


def test_a_malformed_request_gets_a_json_400(server: Server) -> None:
    answer, _ = exchange(server.url, [b"\x00\x01 nonsense\r\n\r\n"])
    assert_json_error(answer, 400, "invalid HTTP request")


def test_an_ordinary_answer_has_no_server_header(server: Server) -> None:
    with server.client() as client:
        answer = client.get("/health/live")
    assert answer.status_code == 200
    assert "server" not in answer.headers
