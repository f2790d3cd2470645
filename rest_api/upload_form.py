"""The plain upload form (one CSV file and its target_variable), read straight from a body.

FastAPI's form reading (Starlette's MultiPartParser: a SpooledTemporaryFile and an UploadFile
per file, then its dependency solving) costs more than evaluating a 45-row CSV. This reads the
same python-multipart parse events and keeps only the one form every client sends: a
`target_variable` field and a `csv_file` file, once each, UTF-8, complete. Anything else
returns None, and the route hands the request to FastAPI, which answers it exactly as before
(its 400, 413 and 422 included).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    parts = _Parts()
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError:
        return None
    return parts.form()


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

    def form(self) -> UploadForm | None:
        if not self.ended or len(self.parts) != 2:
            return None
        target: str | None = None
        csv: tuple[bytes, str] | None = None
        for disposition, data in self.parts:
            _, options = parse_options_header(disposition)
            name, filename = options.get(b"name"), options.get(b"filename")
            text = _utf8(filename) if filename is not None else None
            if name == TARGET_FIELD and filename is None and 0 < len(data) <= _MAX_FIELD_BYTES:
                target = _utf8(bytes(data))
            elif name == FILE_FIELD and text and data:
                csv = (bytes(data), text)
        if target is None or csv is None:
            return None  # a field missing, repeated, empty or of another name
        return UploadForm(target_variable=target, csv=csv[0], filename=csv[1])


def _utf8(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None  # Starlette would read it as latin-1
