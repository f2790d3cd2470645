"""The one checked CSV reader: header, UTF-8 and binary content, quoting and ragged rows, each
problem an InvalidDataset naming its line. Training, evaluation and CSV prediction read with it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ML.errors import DatasetTooLarge, InvalidDataset
from ML.messages import listed_names

NO_DATA_ROWS = "the CSV has a header but no data rows; add at least one row below the header"
READ_BLOCK_BYTES = 1 << 20
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_LF = ord("\n")
_COMMA = ord(",")
# The buffer stops growing here even if it holds fewer lines than asked (very long lines).
_MAX_BUFFER_BYTES = 64 << 20


@dataclass(frozen=True)
class PlainLines:
    """Records that are one unquoted line each, of the header's width: their UTF-8 text (checked)
    with LF line ends, read as the csv module would read them."""

    body: bytes
    rows: int


@dataclass(frozen=True)
class ParsedRecords:
    """Records as the csv module parsed them (quoted cells, lone CR line ends, ...): their
    cells, row after row, in one flat list."""

    cells: list[str]
    rows: int


@contextmanager
def opened(source: BinaryIO | Path) -> Iterator[BinaryIO]:
    """The source as a binary stream: a path is opened (and closed after), a stream is used."""
    if isinstance(source, Path):
        with source.open("rb") as stream:
            yield stream
    else:
        yield source


class CsvReader:
    """The header and the data records of a CSV byte stream, checked as they are read.

    It reads as the csv module reads (strict quoting, strict UTF-8, a BOM skipped, blank lines
    skipped) and fails with the physical line number (the header being line 1 or below blank
    lines). A run of records that are unquoted lines holding the header's number of commas, the
    common case, is checked with a few numpy passes and comes out as `PlainLines`, not through
    the csv module's loop per row.
    """

    def __init__(self, binary: BinaryIO, *, max_columns: int | None = None) -> None:
        self._binary = binary
        self._buffer = b""  # read and not yet consumed, from a record boundary (or _position)
        self._position = 0  # within _buffer, while the csv module consumes lines
        self._line = 1  # physical line number of the buffer's first line
        self._is_first_read = True
        self._is_at_end = False
        try:
            while len(self._buffer) < len(_UTF8_BOM) and self._append_block():
                pass
        except _BinaryContent as exc:
            raise _unreadable(exc, self._line) from None
        if self._buffer.startswith(_UTF8_BOM):
            self._buffer = self._buffer[len(_UTF8_BOM) :]
        self.header = self._read_header()
        if max_columns is not None and len(self.header) > max_columns:
            raise DatasetTooLarge(
                f"the CSV has {len(self.header)} columns; the limit is {max_columns}"
            )
        _check_header_names(self.header)

    def batches(self, size: int) -> Iterator[PlainLines | ParsedRecords]:
        """The data records in batches of at most `size`; InvalidDataset if there are none."""
        count = 0
        while records := self._next_records(size):
            yield records
            count += records.rows
        if count == 0:
            raise InvalidDataset(NO_DATA_ROWS)

    def _next_records(self, size: int) -> PlainLines | ParsedRecords | None:
        try:
            self._fill(size)
            body, count = self._take_lines(size)
        except (_BinaryContent, UnicodeDecodeError) as exc:
            raise _unreadable(exc, self._line) from None
        if count:
            return PlainLines(body, count)
        cells, count = self._read_records(size)
        return ParsedRecords(cells, count) if count else None

    def _take_lines(self, rows: int) -> tuple[bytes, int]:
        """Up to `rows` lines from the buffer when all are plain records (LF ends, UTF-8
        checked), and how many; (b"", 0) when the csv module must read them."""
        buffer = self._buffer
        line_ends = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == _LF)[:rows]
        if not len(line_ends):
            return b"", 0
        body = buffer[: line_ends[-1] + 1]
        if b'"' in body or body.startswith(_UTF8_BOM):  # pandas would drop a BOM: let csv see it
            return b"", 0
        if b"\r" in body:
            if body.count(b"\r") != body.count(b"\r\n"):
                return b"", 0  # a lone CR ends a line for the csv module
            body = body.replace(b"\r\n", b"\n")
        if not _are_plain_lines(body, len(self.header)):
            return b"", 0
        if not body.isascii():
            body.decode("utf-8")
        self._buffer = buffer[line_ends[-1] + 1 :]
        self._line += len(line_ends)
        return body, len(line_ends)

    def _read_header(self) -> list[str]:
        reader = csv.reader(self._lines(), strict=True)
        before = self._line - 1
        record_line = self._line
        try:
            for row in reader:
                if not _is_blank(row):
                    self._consume(reader.line_num)
                    return row
                record_line = before + reader.line_num + 1
        except (_BinaryContent, UnicodeDecodeError, csv.Error) as exc:
            raise _unreadable(exc, record_line) from None
        raise InvalidDataset(
            "the CSV is empty; upload a file with a header row naming the columns and data rows"
        )

    def _read_records(self, limit: int) -> tuple[list[str], int]:
        """Up to `limit` records read with the csv module: their cells, row after row, and
        how many. Blank lines are skipped, ragged rows refused."""
        reader = csv.reader(self._lines(), strict=True)
        width = len(self.header)
        before = self._line - 1
        record_line = self._line  # where the record being read starts
        cells: list[str] = []
        count = 0
        try:
            for row in reader:
                if len(row) == width:
                    # One flat list: a list kept per row makes the garbage collector's passes
                    # grow with the batch.
                    cells += row
                    count += 1
                    if count == limit:
                        break
                elif not _is_blank(row):
                    raise _ragged_row(before + reader.line_num, len(row), width)
                record_line = before + reader.line_num + 1
        except (_BinaryContent, UnicodeDecodeError, csv.Error) as exc:
            raise _unreadable(exc, record_line) from None
        self._consume(reader.line_num)
        return cells, count

    def _lines(self) -> Iterator[str]:
        """Lines from `_position` on, ends kept, split where the csv module splits them (CRLF,
        LF or a lone CR), more blocks read as needed."""
        while True:
            end = self._complete_lines_end()
            if end <= self._position:
                if self._append_block():
                    continue
                return
            segment = self._buffer[self._position : end]
            is_ascii = segment.isascii()
            # Split as TextIOWrapper(newline="") does: one decode, lines split in C.
            for line in io.StringIO(segment.decode("utf-8"), newline=""):
                self._position += len(line) if is_ascii else len(line.encode("utf-8"))
                yield line

    def _complete_lines_end(self) -> int:
        """Where the buffer's last complete line ends (a CR as the last byte may be half of a
        CRLF, so it does not end a line until more is read)."""
        buffer = self._buffer
        return max(buffer.rfind(b"\n"), buffer.rfind(b"\r", self._position, len(buffer) - 1)) + 1

    def _consume(self, lines: int) -> None:
        self._buffer = self._buffer[self._position :]
        self._position = 0
        self._line += lines

    def _fill(self, lines: int) -> None:
        """Read until the buffer holds `lines` line ends, `_MAX_BUFFER_BYTES`, or the end."""
        count = self._buffer.count(b"\n")
        blocks = [self._buffer]
        size = len(self._buffer)
        while count < lines and size < _MAX_BUFFER_BYTES and not self._is_at_end:
            block = self._read_block()
            blocks.append(block)
            count += block.count(b"\n")
            size += len(block)
        self._buffer = b"".join(blocks)
        self._end_with_line_break()

    def _append_block(self) -> bool:
        """Read one more block into the buffer, dropping what is consumed; False at the end."""
        if self._is_at_end:
            return False
        self._buffer = self._buffer[self._position :] + self._read_block()
        self._position = 0
        self._end_with_line_break()
        return True

    def _read_block(self) -> bytes:
        block = self._binary.read(READ_BLOCK_BYTES)
        if not block:
            self._is_at_end = True
            return b""
        if b"\x00" in block:
            # Excel's "Unicode text" is UTF-16: say so rather than call it binary.
            raise _BinaryContent(is_utf16=self._is_first_read and block[:2] in _UTF16_BOMS)
        self._is_first_read = False
        return block

    def _end_with_line_break(self) -> None:
        # The last line may lack its line end; the csv module reads it the same either way.
        if self._is_at_end and self._buffer and not self._buffer.endswith(b"\n"):
            self._buffer += b"\n"


def _are_plain_lines(body: bytes, width: int) -> bool:
    """Whether every line of `body` (LF ends) is a record of `width` unquoted cells that the
    csv module would read as that record: the right number of commas, not blank, no cell
    beyond the csv module's field size limit."""
    codes = np.frombuffer(body, dtype=np.uint8)
    line_ends = np.flatnonzero(codes == _LF)
    commas_before_ends = np.searchsorted(np.flatnonzero(codes == _COMMA), line_ends)
    if not (np.diff(commas_before_ends, prepend=0) == width - 1).all():
        return False
    lengths = np.diff(line_ends, prepend=-1) - 1
    return bool(lengths.min() > 0 and lengths.max() <= csv.field_size_limit())


class _BinaryContent(Exception):
    """A NUL byte: the upload is not UTF-8 text."""

    def __init__(self, *, is_utf16: bool) -> None:
        super().__init__()
        self.is_utf16 = is_utf16


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _ragged_row(line: int, fields: int, width: int) -> InvalidDataset:
    return InvalidDataset(
        f"line {line} has {fields} field{'s' if fields != 1 else ''} but the header has "
        f"{width}; every row needs one value per column (leave a cell empty for a missing value)"
    )


def _unreadable(exc: Exception, line: int) -> InvalidDataset:
    """The InvalidDataset for a failure of the text stack or the csv module at `line`."""
    if isinstance(exc, _BinaryContent) and exc.is_utf16:
        return InvalidDataset(
            "the CSV is UTF-16 text; save it as UTF-8 (e.g. Excel's 'CSV UTF-8') "
            "and upload it again"
        )
    if isinstance(exc, _BinaryContent):
        return InvalidDataset(
            "the file is binary, not CSV text (it contains NUL bytes); "
            "export the data as a UTF-8 CSV and upload that"
        )
    if isinstance(exc, UnicodeDecodeError):
        byte = exc.object[exc.start : exc.start + 1].hex()
        return InvalidDataset(
            f"the CSV is not UTF-8 text (it has the byte 0x{byte} where UTF-8 does not allow "
            "it); save it as UTF-8 (e.g. Excel's 'CSV UTF-8') and upload it again"
        )
    return InvalidDataset(
        f"line {line} is not valid CSV ({exc}); check the quoting: a quoted cell must "
        'end with a closing " and quotes inside it must be doubled ("")'
    )


def _check_header_names(header: list[str]) -> None:
    unnamed = [str(position) for position, name in enumerate(header, start=1) if not name.strip()]
    if unnamed:
        raise InvalidDataset(
            f"the header has no name for column{'s' if len(unnamed) > 1 else ''} "
            f"{', '.join(unnamed)} (counting from 1); name every column, or remove the empty "
            "column (an index column or a trailing comma makes one)"
        )
    seen: set[str] = set()
    duplicated: list[str] = []
    for name in header:
        if name in seen and name not in duplicated:
            duplicated.append(name)
        seen.add(name)
    if duplicated:
        raise InvalidDataset(
            f"the header repeats column names: {listed_names(duplicated)}; "
            "give every column a unique name"
        )
