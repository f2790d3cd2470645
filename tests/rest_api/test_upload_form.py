"""The plain upload form: read for the bodies clients build, None for anything FastAPI must read."""

from __future__ import annotations

import httpx
import pytest

from rest_api.upload_form import UploadForm, _parsed_parts, _split_parts, read_plain_form
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


# Bodies around the plain shape: the split must give python-multipart's parts or step aside.
ODD_BODIES = [
    TARGET + FILE + END,
    TARGET + FILE + b"--B--",
    TARGET + FILE + b"--B--\r\nepilogue",
    TARGET + FILE + b"--B--\r\n--B\r\n",
    b"\r\n" + TARGET + FILE + END,
    TARGET + FILE.replace(b"--B\r\n", b"--B \t\r\n") + END,  # padding after a delimiter
    TARGET.replace(b"species", b"spe\r\n--Bcies") + FILE + END,
    TARGET.replace(b"species", b"spe\r\n--B--cies") + FILE + END,
    TARGET.replace(b"species", b"spe\r\n\r\ncies") + FILE + END,
    TARGET.replace(b"Content-Disposition: ", b"content-disposition:   ") + FILE + END,
    TARGET.replace(b"Content-Disposition: ", b"Content-Disposition : ") + FILE + END,
    TARGET.replace(b"Content-Disposition", b"X-Other: 1\r\nContent-Disposition") + FILE + END,
    TARGET.replace(b"\r\n\r\n", b"\r\nContent-Type: text/plain\r\n\r\n") + FILE + END,
    TARGET.replace(b'name="target_variable"', b'name="target_variable"\rx') + FILE + END,
    TARGET.replace(b'name="target_variable"', b'name="target_variable"\nx') + FILE + END,
    TARGET.replace(b"Content-Disposition: ", b"Content-Disposition: " + b"x" * 2000) + FILE + END,
    b"--B\r\n\r\nspecies\r\n" + FILE + END,
    b"--B\r\n\r\n\r\nspecies\r\n" + FILE + END,
    TARGET + FILE + b"--B-",
    TARGET + FILE[:-2] + END,
]


@pytest.mark.parametrize("body", ODD_BODIES)
def test_the_split_gives_the_parsers_parts_or_steps_aside(body: bytes) -> None:
    split, parsed = _split_parts(b"B", body), _parsed_parts(b"B", body)
    if split is not None:
        assert parsed is not None
        assert split == [(disposition, bytes(data)) for disposition, data in parsed]
    assert _split_parts(b"B", TARGET + FILE + END) is not None  # the plain body takes the split


def test_every_cut_of_a_plain_body_reads_as_the_parser_reads_it() -> None:
    # Each byte removed or doubled: wherever the split answers, it is the parser's answer.
    body = TARGET + FILE + END
    bodies = [body[:i] + body[i + 1 :] for i in range(len(body))]
    bodies += [body[:i] + body[i : i + 1] * 2 + body[i + 1 :] for i in range(len(body))]
    for odd in bodies:
        split, parsed = _split_parts(b"B", odd), _parsed_parts(b"B", odd)
        if split is not None:
            assert parsed is not None
            assert split == [(disposition, bytes(data)) for disposition, data in parsed]
