"""The plain upload form: read for the bodies clients build, None for anything FastAPI must read."""

from __future__ import annotations

import httpx
import pytest

from rest_api.upload_form import UploadForm, read_plain_form
from testing.fastml_api import multipart_body

CSV = b"a,b,species\n1,2,x\n3,4,y\n"
EXPECTED = UploadForm(target_variable="species", csv=CSV, filename="data.csv")


def httpx_form(data: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", "http://x/get_prediction", data=data, files=files)
    return request.headers["content-type"].encode(), request.read()


def test_the_forms_clients_build_are_read() -> None:
    content_type, body = multipart_body(
        {"target_variable": "species"}, {"csv_file": ("data.csv", CSV)}
    )
    assert read_plain_form(content_type.encode(), body) == EXPECTED
    assert (
        read_plain_form(
            *httpx_form({"target_variable": "species"}, {"csv_file": ("data.csv", CSV)})
        )
        == EXPECTED
    )


def part(name: bytes, data: bytes, filename: bytes | None = None) -> bytes:
    disposition = b'form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + data + b"\r\n"


TARGET = part(b"target_variable", b"species")
FILE = part(b"csv_file", CSV, b"data.csv")
END = b"--B--\r\n"


def test_the_plain_form_in_either_order() -> None:
    assert read_plain_form(b"multipart/form-data; boundary=B", TARGET + FILE + END) == EXPECTED
    assert read_plain_form(b'Multipart/Form-Data; boundary="B"', FILE + TARGET + END) == EXPECTED


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"multipart/form-data; boundary=B; charset=latin-1", TARGET + FILE + END),
        (b"multipart/form-data", TARGET + FILE + END),
        (b"application/x-www-form-urlencoded", b"target_variable=species"),
        (None, TARGET + FILE + END),
        (b"multipart/form-data; boundary=B", TARGET + FILE),  # not complete
        (b"multipart/form-data; boundary=B", TARGET + TARGET + FILE + END),
        (b"multipart/form-data; boundary=B", TARGET + part(b"other", b"1") + FILE + END),
        (b"multipart/form-data; boundary=B", FILE + END),
        (b"multipart/form-data; boundary=B", part(b"target_variable", b"") + FILE + END),
        (b"multipart/form-data; boundary=B", part(b"target_variable", b"\xe9") + FILE + END),
        (b"multipart/form-data; boundary=B", TARGET + part(b"csv_file", CSV) + END),
        (b"multipart/form-data; boundary=B", TARGET + part(b"csv_file", CSV, b"") + END),
        (b"multipart/form-data; boundary=B", TARGET + part(b"csv_file", b"", b"a.csv") + END),
        (b"multipart/form-data; boundary=B", b"--B\r\nno header\r\n\r\nx\r\n" + END),
    ],
    ids=[
        "charset",
        "no boundary",
        "urlencoded",
        "no content type",
        "truncated",
        "two targets",
        "another field",
        "no target",
        "empty target",
        "target not UTF-8",
        "file as a field",
        "empty filename",
        "empty file",
        "malformed",
    ],
)
def test_anything_else_is_left_to_fastapi(content_type: bytes | None, body: bytes) -> None:
    assert read_plain_form(content_type, body) is None
