"""The plain upload form (one CSV file and its target_variable), read straight from a body.

FastAPI's form reading (Starlette's MultiPartParser: a SpooledTemporaryFile and an UploadFile
per file, then its dependency solving) costs more than evaluating a 45-row CSV. This reads the
same python-multipart parse events and keeps only the one form every client sends: a
`target_variable` field and a `csv_file` file, once each, UTF-8, complete. Anything else
returns None, and the route hands the request to FastAPI, which answers it exactly as before
(its 400, 413 and 422 included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from rest_api.uploads import UPLOAD_FORM_LIMITS

if TYPE_CHECKING:  # a typing-only name of python-multipart
    from python_multipart.multipart import MultipartCallbacks

# Bodies above this take FastAPI's spooled reading: the fast path holds the body in memory.
MAX_PLAIN_FORM_BYTES = 512 << 10
FILE_FIELD, TARGET_FIELD = b"csv_file", b"target_variable"
_MAX_FIELD_BYTES: int = UPLOAD_FORM_LIMITS["max_part_size"]


@dataclass(frozen=True)
class UploadForm:
    target_variable: str
    csv: bytes
    filename: str


def read_plain_form(content_type: bytes | None, body: bytes) -> UploadForm | None:
    """The form in `body`, or None wherever FastAPI's reading might not give the same."""
    if content_type is None:
        return None
    media_type, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    # A charset changes how Starlette decodes names and fields: FastAPI's way then.
    if media_type != b"multipart/form-data" or not boundary or b"charset" in params:
        return None
    parts = _split_parts(boundary, body) or _parsed_parts(boundary, body)
    return None if parts is None else _form(parts)


def _parsed_parts(boundary: bytes, body: bytes) -> list[tuple[bytes, bytearray]] | None:
    """The (Content-Disposition, data) of each part as python-multipart reads them, or None for
    a body it refuses or that does not end."""
    collected = _Parts()
    try:
        parser = MultipartParser(boundary, collected.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError:
        return None
    return collected.parts if collected.ended else None


# The body every client sends: two parts, each of one or two short, well-formed header lines,
# closed by the final boundary and at most a CRLF. Split on the delimiter, it gives the very
# parts python-multipart gives (its parser ends a part at the first delimiter followed by CRLF
# or "--", and reads a header line as a token, a colon, spaces and the value up to CR LF), at
# about a tenth of the parse's cost, which was a third of the route's own work. Any other body
# (padding after a delimiter, a delimiter inside data, an epilogue, other headers) is left to
# the parser: this never decides a case where the two could differ.
_MAX_PLAIN_HEADER_LINES = 2
_MAX_PLAIN_HEADER_BYTES = 1024  # python-multipart allows 8 lines of 4,224 bytes
_PLAIN_HEADER_NAMES = frozenset({b"content-disposition", b"content-type"})
_PLAIN_ENDS = frozenset({b"--", b"--\r\n"})


def _split_parts(boundary: bytes, body: bytes) -> list[tuple[bytes, bytes]] | None:
    """The (Content-Disposition, data) of each part of a body of the plain shape, or None when
    the body is of another shape (the parser then reads it)."""
    delimiter = b"\r\n--" + boundary
    if not body.startswith(b"--" + boundary + b"\r\n"):
        return None
    pieces = body[len(delimiter) :].split(delimiter)
    if len(pieces) != 3 or pieces[2] not in _PLAIN_ENDS or not pieces[1].startswith(b"\r\n"):
        return None
    parts = []
    for piece in (pieces[0], pieces[1][2:]):
        head, blank, data = piece.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not blank or len(lines) > _MAX_PLAIN_HEADER_LINES:
            return None
        disposition = b""
        for line in lines:
            name, colon, value = line.partition(b":")
            if (
                not colon
                or len(line) > _MAX_PLAIN_HEADER_BYTES
                or name.lower() not in _PLAIN_HEADER_NAMES
                or b"\r" in value
                or b"\n" in value
            ):
                return None
            if name.lower() == b"content-disposition":
                disposition = value.lstrip(b" ")  # the last one, as Starlette keeps it
        parts.append((disposition, data))
    return parts


class _Parts:
    """Collects each part's headers and data from the parser's callbacks."""

    def __init__(self) -> None:
        self.parts: list[tuple[bytes, bytearray]] = []  # (Content-Disposition, data)
        self.header_name = b""
        self.header_value = b""
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self.parts.append((b"", bytearray()))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1][1].extend(data[start:end])

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        # Starlette keeps the last Content-Disposition of a part, as this does.
        if self.header_name.lower() == b"content-disposition":
            self.parts[-1] = (self.header_value, self.parts[-1][1])
        self.header_name = self.header_value = b""

    def _end(self) -> None:
        self.ended = True


def _form(parts: Sequence[tuple[bytes, bytes | bytearray]]) -> UploadForm | None:
    """The form of these (Content-Disposition, data) parts, or None unless it is the plain one."""
    if len(parts) != 2:
        return None
    target: str | None = None
    csv: tuple[bytes, str] | None = None
    for disposition, data in parts:
        _, options = _disposition_options(disposition)
        name, filename = options.get(b"name"), options.get(b"filename")
        text = _utf8(filename) if filename is not None else None
        if name == TARGET_FIELD and filename is None and 0 < len(data) <= _MAX_FIELD_BYTES:
            target = _utf8(bytes(data))
        elif name == FILE_FIELD and text and data:
            csv = (bytes(data), text)
    if target is None or csv is None:
        return None  # a field missing, repeated, empty or of another name
    return UploadForm(target_variable=target, csv=csv[0], filename=csv[1])


@lru_cache(maxsize=64)
def _disposition_options(disposition: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """parse_options_header, remembered: every request of a client sends the same two. The
    dict is shared between calls: read it, never change it."""
    return parse_options_header(disposition)


def _utf8(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None  # Starlette would read it as latin-1
