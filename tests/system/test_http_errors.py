"""Errors that say what to fix, on real gunicorn over raw sockets (issue 7, points 8 and 10).

Bodies over the limit get 413 on every route, chunked or not; a multipart body the server
cannot parse gets a JSON 400 naming the fix; a trailing slash gets a 404 naming the path
meant, never a redirect built from the Host header.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testing.fastml_api import basic_auth_header
from testing.servers import ADMIN, Server
from tests.iris import serving_iris
from tests.system.http_wire import RawAnswer, exchange, request_bytes

pytestmark = pytest.mark.system

MAX_UPLOAD_BYTES = 20_000
MAX_JSON_BYTES = 2_000
AUTHORIZATION = basic_auth_header(*ADMIN)
BOUNDARY = "fastml-test-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving_iris(
        tmp_path_factory.mktemp("http-errors"),
        {
            "FASTML_WORKERS": "1",
            "FASTML_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "FASTML_MAX_JSON_BYTES": str(MAX_JSON_BYTES),
        },
    )


def chunked(body: bytes, size: int = 1000) -> list[bytes]:
    """`body` as HTTP chunks of `size` bytes, then the last chunk."""
    pieces = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return [*pieces, b"0\r\n\r\n"]


def multipart_csv(rows: int) -> bytes:
    """A multipart body with an iris CSV of `rows` data rows and target_variable=species."""
    header = b"sepal_length,sepal_width,petal_length,petal_width,species\n"
    csv = header + b"5.1,3.5,1.4,0.2,setosa\n" * rows
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="target_variable"\r\n\r\n'
            f"species\r\n--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="csv_file"; filename="big.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + csv
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def send(
    server: Server, method: str, path: str, content_type: str, body: bytes, *, is_chunked: bool
) -> RawAnswer:
    """An authorised request with `body`, chunked or with Content-Length; the answer."""
    framing = ("Transfer-Encoding", "chunked") if is_chunked else ("Content-Length", str(len(body)))
    head = request_bytes(
        method,
        path,
        [("Authorization", AUTHORIZATION), ("Content-Type", content_type), framing],
    )
    pieces = [head, *chunked(body)] if is_chunked else [head + body]
    answer, _ = exchange(server.url, pieces, wait=30)
    return answer


def assert_json_error(answer: RawAnswer, status: int, *words: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    error = answer.json()["error"]
    assert error["status"] == status
    for word in words:
        assert word in error["message"], error


@pytest.mark.parametrize(
    "path",
    ["/models/iris/train", "/models/iris/predict/csv", "/models/iris/evaluate", "/train_model"],
)
def test_a_chunked_upload_over_the_limit_gets_413(server: Server, path: str) -> None:
    body = multipart_csv(rows=2_000)  # about 46 KB, over the 20 KB limit
    answer = send(server, "POST", path, FORM, body, is_chunked=True)
    assert_json_error(
        answer, 413, f"over the limit of {MAX_UPLOAD_BYTES} bytes", "FASTML_MAX_UPLOAD_BYTES"
    )
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/models/iris/current"), ("POST", "/models/iris/predict")]
)
def test_a_chunked_json_body_over_the_limit_gets_413(
    server: Server, method: str, path: str
) -> None:
    body = b'{"version": 1, "padding": "' + b"x" * 5_000 + b'"}'
    answer = send(server, method, path, "application/json", body, is_chunked=True)
    assert_json_error(
        answer, 413, f"over the limit of {MAX_JSON_BYTES} bytes", "FASTML_MAX_JSON_BYTES"
    )
    assert answer.headers["connection"] == "close"


def test_a_chunked_upload_within_the_limit_is_served(server: Server) -> None:
    body = multipart_csv(rows=20)
    answer = send(
        server,
        "POST",
        "/models/iris/predict/csv",
        FORM,
        body,
        is_chunked=True,
    )
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("text/csv")


def test_a_too_long_multipart_boundary_names_the_fix(server: Server) -> None:
    boundary = "b" * 100
    body = multipart_csv(rows=1).replace(BOUNDARY.encode(), boundary.encode())
    answer = send(
        server,
        "POST",
        "/models/iris/train",
        f"multipart/form-data; boundary={boundary}",
        body,
        is_chunked=False,
    )
    assert_json_error(answer, 400, "boundary is 100 characters long", "1 to 70", "curl -F")


def test_a_malformed_multipart_body_names_the_fix(server: Server) -> None:
    body = f"--{BOUNDARY}\r\nno header line\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    answer = send(
        server,
        "POST",
        "/models/iris/predict/csv",
        FORM,
        body,
        is_chunked=False,
    )
    assert_json_error(answer, 400, "the multipart body is malformed", "curl -F")


def test_a_json_body_that_is_not_utf8_names_the_fix(server: Server) -> None:
    body = b'{"version": "\xff\xfe"}'
    answer = send(server, "PUT", "/models/iris/current", "application/json", body, is_chunked=False)
    assert_json_error(answer, 400, "not UTF-8", "send JSON encoded as UTF-8")


def test_a_trailing_slash_gets_a_404_naming_the_path_not_a_redirect(server: Server) -> None:
    head = request_bytes(
        "GET",
        "/models/",
        [("Authorization", AUTHORIZATION), ("Connection", "close")],
    ).replace(b"Host: 127.0.0.1", b"Host: attacker.example")
    answer, _ = exchange(server.url, [head])
    assert_json_error(answer, 404, "no route GET /models/; did you mean /models?")
    assert "location" not in answer.headers
    assert b"attacker.example" not in answer.body


def test_a_405_lists_every_method_of_the_path(server: Server) -> None:
    head = request_bytes(
        "OPTIONS", "/models/iris", [("Authorization", AUTHORIZATION), ("Connection", "close")]
    )
    answer, _ = exchange(server.url, [head])
    assert_json_error(answer, 405, "OPTIONS is not allowed on /models/iris; it allows GET, DELETE")
    assert answer.headers["allow"] == "GET, DELETE"
    assert "server" not in answer.headers, "no `server: uvicorn` header"
