"""CSV datasets: reading and checking uploads, and turning prediction input into feature frames."""

from __future__ import annotations

import csv
import io
import itertools
import math
import numbers
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype, is_bool_dtype, is_numeric_dtype

from ML.errors import DatasetTooLarge, InvalidDataset, InvalidInput

# At most this many field-level problems are returned in an error's details.
MAX_DETAILS = 100
_PROBLEMS_IN_MESSAGE = 5
_ROWS_IN_MESSAGE = 5
_NAMES_IN_MESSAGE = 30
_MISSING_FIELD = "is missing"
_UNEXPECTED_FIELD = "is not a feature of this model"

# pandas' default NA strings: read_csv turns them into NaN at training time, so every other
# path (CSV prediction, evaluation) must treat the same cells as missing.
_MISSING_MARKERS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_STARTS = frozenset("=+-@\t\r")
# A plain number ("-1.5", "+1e5", ".5") is data, not a formula, though it may start with + or -:
# escaping it would turn a number into text. The sign is matched apart, in the patterns below.
_UNSIGNED_NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_PLAIN_NUMBER = re.compile(r"[+-]?" + _UNSIGNED_NUMBER)
# The first character of a cell to escape, in unquoted CSV text with LF line ends: a formula
# start right after a comma, a line end or the start of the text, unless a plain number follows.
_FORMULA_IN_LINES = re.compile(
    rb"[=+\-@\t](?<![^,\n].)(?!(?<=[+-])" + _UNSIGNED_NUMBER.encode() + rb"[,\n])"
)
# The same for text cells joined with NUL, which CSV text never holds (uploads with one fail).
_FORMULA_IN_JOINED = re.compile(
    r"[=+\-@\t\r](?<![^\x00].)(?!(?<=[+-])" + _UNSIGNED_NUMBER + r"(?:\x00|\Z))"
)
_CELL_SEPARATOR = "\x00"
_FORMULA_BYTES = tuple(character.encode() for character in sorted(_FORMULA_STARTS))
_READ_BLOCK_BYTES = 1 << 20
_SPOOL_BYTES = 32 << 20
_SCAN_BATCH_ROWS = 10_000
# Rows read by check_training_csv_start: enough for a header-and-shape check, cheap at any size.
_START_CHECK_ROWS = 1_000
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_LF = ord("\n")
_COMMA = ord(",")
# A chunk's buffer stops growing here even if it holds fewer lines than asked (very long lines).
_MAX_BUFFER_BYTES = 64 << 20


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Feature:
    """One input column of a model, as recorded at training time."""

    name: str
    kind: FeatureKind
    dtype: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind.value, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> Feature:
        return cls(name=data["name"], kind=FeatureKind(data["kind"]), dtype=data["dtype"])


@dataclass(frozen=True)
class DatasetLimits:
    max_rows: int = 2_000_000
    max_columns: int = 1_000
    max_classes: int = 1_000


@dataclass
class Dataset:
    """A labelled CSV: numeric features as numbers, categorical ones as text (NaN when missing)."""

    features: pd.DataFrame
    target: pd.Series
    schema: list[Feature]
    target_variable: str


# ---------------------------------------------------------------------------------------------
# Reading CSV files
# ---------------------------------------------------------------------------------------------


def read_labelled_csv(
    source: BinaryIO | Path, target_variable: str, limits: DatasetLimits
) -> Dataset:
    """Read a training CSV: every column but `target_variable` is a feature.

    The file is read twice: once with the csv module to check its shape (encoding, NUL bytes,
    ragged rows, row limit) with exact line numbers, then with pandas for type inference.
    Missing cells are the empty cell and pandas' default NA strings (NA, null, NaN, ...).
    """
    with _rewindable(source) as binary:
        start = binary.tell()
        header = _scan(binary, limits, lambda names: _check_training_header(names, target_variable))
        binary.seek(start)
        frame = _parse(binary, header, limits)
        # pandas reads True/False columns as bool; they are categorical, and their categories must
        # be the text as written so that prediction input (text) matches them.
        bool_columns = [
            name for name in header if name != target_variable and _needs_text(frame[name])
        ]
        if bool_columns:
            binary.seek(start)
            text = _parse(binary, header, limits, usecols=bool_columns, dtype=str)
            for name in bool_columns:
                frame[name] = text[name]
    return _dataset_from_frame(frame, target_variable, limits, bool_columns=set(bool_columns))


def check_training_csv_start(
    source: BinaryIO | Path, target_variable: str, limits: DatasetLimits
) -> None:
    """What can be checked at once, before a training job is queued: the header (UTF-8 text,
    unique names, the target present, the column limit) and the first rows' shape.

    The job reads and checks the whole file; this only lets the common mistakes fail with a
    422 on the train request itself instead of in the job.
    """
    with _rewindable(source) as binary:
        start = binary.tell()
        records = _checked_records(
            binary, limits, lambda names: _check_training_header(names, target_variable)
        )
        if not next(records.batches(_START_CHECK_ROWS), []):
            raise InvalidDataset(_NO_DATA_ROWS)
        binary.seek(start)


def read_evaluation_csv(
    source: BinaryIO | Path,
    target_variable: str,
    schema: Sequence[Feature],
    limits: DatasetLimits,
) -> tuple[pd.DataFrame, pd.Series]:
    """Read a labelled CSV to evaluate a model: features in schema order, and the target.

    Extra columns are ignored. Features are converted like `features_from_text_frame`, so a
    file predicts exactly as it would through the CSV prediction route. A single class is
    allowed here (evaluating on a subset is legitimate).
    """
    names = [feature.name for feature in schema]
    if target_variable in names:
        raise InvalidDataset(
            f"'{target_variable}' is a feature of this model, not its target; "
            "name the column holding the labels"
        )
    needed = [*names, target_variable]
    with _rewindable(source) as binary:
        start = binary.tell()
        header = _scan(
            binary, limits, lambda found: _check_evaluation_header(found, names, target_variable)
        )
        binary.seek(start)
        frame = _parse(binary, header, limits, usecols=needed, dtype=dict.fromkeys(names, str))
    if frame.empty:
        raise InvalidDataset(_NO_DATA_ROWS)
    target = _checked_target(frame[target_variable], target_variable, limits, min_classes=1)
    try:
        features = features_from_text_frame(frame, schema, first_row_number=1)
    except InvalidInput as exc:
        raise InvalidDataset(exc.message, details=exc.details) from None
    return features, target


def iter_csv_chunks(source: BinaryIO, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Stream a CSV as frames of at most `chunk_rows` rows, every cell as the text written.

    Memory stays bounded by one chunk. Each chunk's index continues the previous one (row
    position from 0), so `index + 1` is the data row number. A ragged row, NUL byte or bad
    UTF-8 further down raises InvalidDataset when the iteration reaches it.
    """
    for chunk in read_csv_chunks(source, chunk_rows):
        yield chunk.frame


def features_from_text_frame(
    frame: pd.DataFrame, schema: Sequence[Feature], first_row_number: int
) -> pd.DataFrame:
    """Feature frame (schema order) from a frame of CSV text cells.

    Numeric features: numbers as float64; a missing cell (empty or an NA string) is NaN; other
    text, inf or -inf raise InvalidInput naming the column and the first bad data rows, numbered
    from `first_row_number` for the frame's first row. Categorical features: the text, or NaN
    when missing. Extra columns are ignored.
    """
    _check_features_present([str(name) for name in frame.columns], schema)
    arrays = []
    complaints: list[str] = []
    details: list[dict[str, Any]] = []
    for feature in schema:
        cells = frame[feature.name].to_numpy(dtype=object)
        if feature.kind is FeatureKind.NUMERIC:
            values, is_bad = _numbers_from_text(cells)
            if is_bad.any():
                complaints.append(_bad_numbers_text(feature.name, cells, is_bad, first_row_number))
                details.extend(_bad_number_details(feature.name, cells, is_bad, first_row_number))
            arrays.append(values)
        else:
            text = cells.copy()
            text[_missing_cells(cells)] = np.nan
            arrays.append(text)
    if complaints:
        raise InvalidInput("; ".join(complaints), details=details[:MAX_DETAILS])
    return _frame_from_arrays(arrays, pd.Index([f.name for f in schema]), pd.RangeIndex(len(frame)))


def csv_bytes(frame: pd.DataFrame, *, header: bool) -> bytes:
    """The frame as UTF-8 CSV (CRLF line ends), text cells escaped against formula injection.

    A text cell (or header name) starting with `=`, `+`, `-`, `@`, tab or CR gets a leading
    single quote, as OWASP recommends, unless it is a plain number: optional sign, digits with
    an optional decimal point, optional exponent ("-1.5", "+1e5", "-.5"). Such a cell is data
    (a spreadsheet reads it as that number, it runs nothing), and escaping it would corrupt it
    into text; "-1+2", "-inf" or "--1" are not plain numbers and are escaped. Numeric columns are
    written as numbers and never escaped.
    """
    escaped = frame.copy(deep=False)
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if is_numeric_dtype(column):
            continue
        cells = column.to_numpy(dtype=object)
        escaped_cells = _escaped_cells(cells)
        if escaped_cells is not cells:
            escaped.isetitem(position, escaped_cells)
    labels: bool | list[str] = [_escape(str(name)) for name in frame.columns] if header else False
    # CRLF as RFC 4180 says: the csv writer then quotes any cell holding CR or LF.
    text = escaped.to_csv(index=False, header=labels, lineterminator="\r\n", na_rep="")
    return text.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Streaming CSV chunks (CSV prediction)
# ---------------------------------------------------------------------------------------------


class CsvChunk(ABC):
    """Consecutive data records of a CSV, as `read_csv_chunks` read them.

    A chunk turns into a feature frame and back into CSV (its records as written plus added
    columns) without building a text cell per value where it can: that is what makes
    predicting a CSV of millions of rows fast.
    """

    def __init__(self, columns: list[str], first_row: int, rows: int) -> None:
        self.columns = columns
        self.first_row = first_row  # data row number of the first record, from 1
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    @property
    @abstractmethod
    def frame(self) -> pd.DataFrame:
        """Every cell as the text written; the index is the row position in the file, from 0."""

    def features(self, schema: Sequence[Feature]) -> pd.DataFrame:
        """`features_from_text_frame` of the chunk: the same frame, or the same InvalidInput."""
        return features_from_text_frame(self.frame, schema, first_row_number=self.first_row)

    @abstractmethod
    def to_csv(self, added: Mapping[str, np.ndarray], *, header: bool) -> bytes:
        """The records as written plus the `added` columns (one value per record), as UTF-8
        CSV with CRLF line ends and the header row if asked: the same bytes as `csv_bytes` of
        the frame with those columns, so text cells are escaped against formula injection.
        """

    def _header_line(self, added: Mapping[str, np.ndarray]) -> bytes:
        line = io.StringIO()
        csv.writer(line, lineterminator="\r\n").writerow(
            [_escape(name) for name in [*self.columns, *added]]
        )
        return line.getvalue().encode("utf-8")

    def _range_index(self) -> pd.RangeIndex:
        return pd.RangeIndex(self.first_row - 1, self.first_row - 1 + self._rows)


def read_csv_chunks(source: BinaryIO | Path, chunk_rows: int) -> Iterator[CsvChunk]:
    """The data records of a CSV in chunks of at most `chunk_rows`, checked as they are read.

    Memory stays bounded by one chunk. The header is checked first (UTF-8, named and unique
    columns); a ragged row, NUL byte, bad quoting or bad UTF-8 further down raises
    InvalidDataset, with its line number, when the iteration reaches it. The file is read as
    the csv module reads it (strict quoting, blank lines skipped); a run of unquoted one-line
    records, the common case, is split without a Python step per row.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    with _opened(source) as binary:
        reader = _ChunkReader(binary)
        _check_header_names(reader.header)
        emitted = 0
        while chunk := reader.next_chunk(chunk_rows, first_row=emitted + 1):
            yield chunk
            emitted += len(chunk)
        if emitted == 0:
            raise InvalidDataset(_NO_DATA_ROWS)


class _LinesChunk(CsvChunk):
    """Records that are one unquoted line each: `body` is their UTF-8 text, LF line ends.

    pandas' C parser reads the cells, and the output is each line as written (escaped where
    needed, which for unquoted text is a regular-expression pass) plus the added cells.
    """

    def __init__(self, columns: list[str], first_row: int, rows: int, body: bytes) -> None:
        super().__init__(columns, first_row, rows)
        self._body = body

    @cached_property
    def frame(self) -> pd.DataFrame:
        frame = self._read(dtype=object, na_filter=False)
        frame.index = self._range_index()
        return frame

    def features(self, schema: Sequence[Feature]) -> pd.DataFrame:
        _check_features_present(self.columns, schema)
        names = [feature.name for feature in schema]
        categorical = [f.name for f in schema if f.kind is FeatureKind.CATEGORICAL]
        # The parse training uses: numeric columns come out as numbers in one C pass. (It
        # reads "-0" as 0.0 where to_numeric gives -0.0; the two compare equal everywhere.)
        parsed = self._read(
            usecols=names,
            dtype=dict.fromkeys(categorical, object),
            na_values=_MISSING_MARKERS,
            keep_default_na=False,
        )
        arrays = []
        for feature in schema:
            column = parsed[feature.name]
            if feature.kind is FeatureKind.CATEGORICAL:
                arrays.append(column.to_numpy(dtype=object))
                continue
            values = column.to_numpy(dtype=np.float64) if column.dtype.kind in "iuf" else None
            if values is None or np.isinf(values).any():
                # Text, booleans or infinities: the cell-by-cell reading names the bad rows.
                return super().features(schema)
            arrays.append(values)
        return _frame_from_arrays(arrays, pd.Index(names), pd.RangeIndex(len(self)))

    def to_csv(self, added: Mapping[str, np.ndarray], *, header: bool) -> bytes:
        body = self._body
        if any(character in body for character in _FORMULA_BYTES):
            body = _FORMULA_IN_LINES.sub(rb"'\g<0>", body)
        lines = body.split(b"\n")
        lines.pop()  # the text after the last line end: empty
        cells = [_csv_cells(values, len(self)) for values in added.values()]
        rows = zip(lines, *cells, itertools.repeat(b"\r\n", len(lines)), strict=True)
        text = b"".join(itertools.chain.from_iterable(rows))
        return self._header_line(added) + text if header else text

    def _read(self, **options: Any) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(self._body),
            compression=None,
            encoding="utf-8",
            header=None,
            names=self.columns,
            index_col=False,
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,  # whitespace-only lines are records to the csv module
            low_memory=False,  # whole-chunk type inference, as training reads the file
            **options,
        )


class _CellsChunk(CsvChunk):
    """Records as the csv module parsed them (quoted cells, blank or CR-ended lines)."""

    def __init__(self, columns: list[str], first_row: int, rows: int, cells: list[str]) -> None:
        super().__init__(columns, first_row, rows)
        self._cells = cells

    @cached_property
    def frame(self) -> pd.DataFrame:
        by_row = _object_array(self._cells).reshape(len(self), len(self.columns))
        arrays = list(np.ascontiguousarray(by_row.T))
        return _frame_from_arrays(arrays, pd.Index(self.columns), self._range_index())

    def to_csv(self, added: Mapping[str, np.ndarray], *, header: bool) -> bytes:
        frame = self.frame
        columns = [
            _escaped_cells(frame.iloc[:, position].to_numpy()).tolist()
            for position in range(frame.shape[1])
        ]
        columns.extend(_csv_texts(values, len(self)) for values in added.values())
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerows(zip(*columns, strict=True))
        data = text.getvalue().encode("utf-8")
        return self._header_line(added) + data if header else data


def _csv_texts(values: np.ndarray, rows: int) -> list[str]:
    """Each value as `DataFrame.to_csv` writes it (before quoting), text escaped."""
    codes, texts = _encoded_values(values, rows)
    return _object_array(texts).take(codes).tolist()


def _csv_cells(values: np.ndarray, rows: int) -> list[bytes]:
    """Each value as a CSV cell in UTF-8 after a comma: escaped, and quoted when needed."""
    codes, texts = _encoded_values(values, rows)
    table = _object_array([b"," + _quoted(text).encode("utf-8") for text in texts])
    return table.take(codes).tolist()


def _encoded_values(values: np.ndarray, rows: int) -> tuple[np.ndarray, list[str]]:
    """The distinct values' text and each value's position among them.

    Formatting each distinct value once keeps a column of a few labels cheap; the text is
    what `DataFrame.to_csv` writes: `repr` for floats, `str` otherwise, "" when missing.
    """
    array = np.asarray(values)
    if array.shape != (rows,):
        raise ValueError(f"an added column needs {rows} values, one per record; got {array.shape}")
    codes, distinct = pd.factorize(array, use_na_sentinel=True)
    distinct = np.asarray(distinct)
    if distinct.dtype == np.float64:
        texts = list(map(repr, distinct.tolist()))
    elif distinct.dtype.kind in "biuf":
        texts = distinct.astype(str).tolist()
    else:
        texts = [_escape(value) if isinstance(value, str) else str(value) for value in distinct]
    texts.append("")  # the code of a missing value, -1, takes the last one
    return codes, texts


def _quoted(text: str) -> str:
    """The cell as the csv module's writer quotes it (QUOTE_MINIMAL, CRLF line ends)."""
    if any(character in text for character in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


class _ChunkReader:
    """The header and chunks of data records of a CSV byte stream, checked for shape.

    It reads as `_CsvRecords` does (strict UTF-8, BOM skipped, blank lines skipped, csv module
    quoting rules, the same errors and physical line numbers), but a run of records that are
    unquoted lines holding the header's number of commas becomes a `_LinesChunk` checked with
    a few numpy passes, not the csv module's loop per row.
    """

    def __init__(self, binary: BinaryIO) -> None:
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

    def next_chunk(self, rows: int, *, first_row: int) -> CsvChunk | None:
        """The next chunk of at most `rows` records, or None at the end of the file."""
        try:
            self._fill(rows)
            body, count = self._take_lines(rows)
        except (_BinaryContent, UnicodeDecodeError) as exc:
            raise _unreadable(exc, self._line) from None
        if count:
            return _LinesChunk(self.header, first_row, count, body)
        cells, count = self._read_records(rows)
        return _CellsChunk(self.header, first_row, count, cells) if count else None

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
                    # grow with the chunk.
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
            # Split as the old TextIOWrapper(newline="") did: one decode, lines split in C.
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
        block = self._binary.read(_READ_BLOCK_BYTES)
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


# ---------------------------------------------------------------------------------------------
# Prediction input (JSON)
# ---------------------------------------------------------------------------------------------


def frame_from_rows(rows: Sequence[Mapping[str, Any]], schema: Sequence[Feature]) -> pd.DataFrame:
    """Feature frame from JSON rows (`[{"feature": value, ...}, ...]`), in schema order.

    Accepted values: numeric features take int or float (bool and strings are not numbers);
    categorical features take strings, and also numbers and booleans, which are converted with
    `str()` (CSV category codes are often numeric-looking, and pandas writes booleans as
    True/False), so a category is matched by its text, e.g. 7 -> "7", 1.5 -> "1.5".
    `None` means missing for any feature; the pipeline imputes it. Every bad field is reported
    in `InvalidInput.details` as `{"row", "field", "error"}`.
    """
    layout = _layout(tuple(schema))
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise InvalidInput(
            "rows must be a list of objects, one per row",
            details=[{"field": "rows", "error": "must be a list"}],
        )
    if not rows:
        raise InvalidInput(
            "rows is empty; send at least one row of feature values",
            details=[{"field": "rows", "error": "is empty"}],
        )
    problems = _Problems()
    checked_rows = [_checked_row(index, row, layout, problems) for index, row in enumerate(rows)]
    if layout.is_all_numeric and not problems.count:
        matrix = _number_matrix(checked_rows, layout.names)
        if matrix is not None:
            return pd.DataFrame(matrix, columns=layout.columns, copy=False)
    arrays = [
        layout.converters[position]([row.get(name) for row in checked_rows], name, problems)
        for position, name in enumerate(layout.names)
    ]
    problems.raise_if_any(features=layout.listing)
    return _feature_frame(arrays, layout)


def matrix_from_rows(rows: Sequence[Mapping[str, Any]], schema: Sequence[Feature]) -> np.ndarray:
    """Float64 matrix (rows x features in schema order, NaN = missing) for an all-numeric schema.

    Same rules and the same `InvalidInput` as `frame_from_rows`; the common case of complete,
    finite rows skips building a DataFrame, which costs more than a compiled forest's predict.
    """
    layout = _layout(tuple(schema))
    if not layout.is_all_numeric:
        raise ValueError("matrix_from_rows needs a schema of numeric features only")
    if (
        isinstance(rows, list)
        and rows
        and all(isinstance(row, dict) and row.keys() == layout.name_set for row in rows)
    ):
        matrix = _number_matrix(rows, layout.names)
        if matrix is not None:
            return matrix
    return frame_from_rows(rows, schema).to_numpy(dtype=np.float64)


def frame_from_columns(
    columns: Mapping[str, Sequence[Any]], schema: Sequence[Feature]
) -> pd.DataFrame:
    """Feature frame from column-oriented JSON (`{"feature": [v0, v1, ...], ...}`).

    Values follow the rules of `frame_from_rows`; every column must have the same length.
    """
    layout = _layout(tuple(schema))
    if not isinstance(columns, Mapping):
        raise InvalidInput(
            "columns must be an object mapping each feature to a list of values",
            details=[{"field": "columns", "error": "must be an object"}],
        )
    problems = _Problems()
    for name in layout.names:
        if name not in columns:
            problems.add({"field": name, "error": _MISSING_FIELD})
    for name in columns:
        if name not in layout.name_set:
            problems.add({"field": str(name), "error": _UNEXPECTED_FIELD})
    for name in layout.names:
        values = columns.get(name)
        if name in columns and not _is_value_list(values):
            problems.add(
                {"field": name, "error": f"must be a list of values, got {_describe(values)}"}
            )
    problems.raise_if_any(features=layout.listing)
    lengths = {name: len(columns[name]) for name in layout.names}
    count = lengths[layout.names[0]]
    for name, length in lengths.items():
        if length != count:
            problems.add(
                {
                    "field": name,
                    "error": f"has {length} values but '{layout.names[0]}' has {count}; "
                    "every column needs one value per row",
                }
            )
    problems.raise_if_any()
    if count == 0:
        raise InvalidInput(
            "columns are empty; send at least one value per feature",
            details=[{"field": "columns", "error": "is empty"}],
        )
    arrays = [
        layout.converters[position](list(columns[name]), name, problems)
        for position, name in enumerate(layout.names)
    ]
    problems.raise_if_any()
    return _feature_frame(arrays, layout)


# ---------------------------------------------------------------------------------------------
# Problems collected for one error
# ---------------------------------------------------------------------------------------------


class _Problems:
    """Field-level problems of one input: all are counted, the first MAX_DETAILS are kept."""

    def __init__(self) -> None:
        self.details: list[dict[str, Any]] = []
        self.count = 0

    def add(self, detail: dict[str, Any]) -> None:
        self.count += 1
        if len(self.details) < MAX_DETAILS:
            self.details.append(detail)

    def raise_if_any(self, *, features: str | None = None) -> None:
        if not self.count:
            return
        shown = "; ".join(_problem_text(detail) for detail in self.details[:_PROBLEMS_IN_MESSAGE])
        more = self.count - min(self.count, _PROBLEMS_IN_MESSAGE)
        message = f"{self.count} problem{'s' if self.count > 1 else ''} in the input: {shown}"
        if more:
            message += f"; and {more} more"
        if features and any(_is_field_problem(detail) for detail in self.details):
            message += f"; the model's features are: {features}"
        raise InvalidInput(message, details=list(self.details))


def _problem_text(detail: Mapping[str, Any]) -> str:
    where = [f"row {detail['row']}"] if "row" in detail else []
    if "field" in detail:
        where.append(f"field '{detail['field']}'")
    return f"{' '.join(where)} {detail['error']}"


def _is_field_problem(detail: Mapping[str, Any]) -> bool:
    return detail["error"] in (_MISSING_FIELD, _UNEXPECTED_FIELD)


# ---------------------------------------------------------------------------------------------
# Converting JSON values
# ---------------------------------------------------------------------------------------------

_Converter = Callable[[list[Any], str, _Problems], np.ndarray]


def _number_matrix(rows: list[Mapping[str, Any]], names: tuple[str, ...]) -> np.ndarray | None:
    """Rows x features float64 matrix when every value is a finite JSON number, else None."""
    values = [row[name] for row in rows for name in names]
    if not _are_finite_numbers(values):
        return None
    try:
        return np.array(values, dtype=np.float64).reshape(len(rows), len(names))
    except OverflowError:
        return None


def _are_finite_numbers(values: list[Any]) -> bool:
    # `x - x == 0` is False for nan, inf and -inf; type checks exclude bool, a subclass of int.
    return all(
        type(value) is int or (type(value) is float and value - value == 0.0) for value in values
    )


def _numeric_values(values: list[Any], name: str, problems: _Problems) -> np.ndarray:
    if _are_finite_numbers(values):
        try:
            return np.array(values, dtype=np.float64)
        except OverflowError:
            pass  # an int beyond float64; reported below
    array = np.empty(len(values), dtype=np.float64)
    for index, value in enumerate(values):
        number, error = _as_number(value)
        array[index] = number
        if error:
            problems.add({"row": index, "field": name, "error": error})
    return array


def _as_number(value: Any) -> tuple[float, str | None]:
    if value is None:
        return math.nan, None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return math.nan, f"must be a number or null, got {_describe(value)}"
    try:
        number = float(value)
    except OverflowError:
        return math.nan, "is too large for a 64-bit float"
    if not math.isfinite(number):
        return math.nan, f"must be a finite number or null, got {number}"
    return number, None


def _categorical_values(values: list[Any], name: str, problems: _Problems) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    if all(type(value) is str for value in values):
        array[:] = values
        return array
    for index, value in enumerate(values):
        text, error = _as_category(value)
        array[index] = text
        if error:
            problems.add({"row": index, "field": name, "error": error})
    return array


def _as_category(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str):
        return value, None
    if value is None:
        return np.nan, None
    if isinstance(value, bool | np.bool_):
        return str(bool(value)), None
    if isinstance(value, numbers.Real):
        if isinstance(value, numbers.Integral) or math.isfinite(value):
            return str(value), None
        return np.nan, f"must be a string, a finite number or null, got {value}"
    return np.nan, f"must be a string, number or null, got {_describe(value)}"


def _describe(value: Any) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"the string {shown!r}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, numbers.Real):
        return repr(value)
    return f"a value of type {type(value).__name__}"


def _is_value_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


@dataclass(frozen=True)
class _Layout:
    """What the hot path needs from a schema, computed once per schema."""

    names: tuple[str, ...]
    name_set: frozenset[str]
    converters: tuple[_Converter, ...]
    columns: pd.Index
    is_all_numeric: bool
    listing: str


@lru_cache(maxsize=256)
def _layout(schema: tuple[Feature, ...]) -> _Layout:
    if not schema:
        raise ValueError("a model needs at least one feature")
    names = tuple(feature.name for feature in schema)
    converters = tuple(
        _numeric_values if feature.kind is FeatureKind.NUMERIC else _categorical_values
        for feature in schema
    )
    return _Layout(
        names=names,
        name_set=frozenset(names),
        converters=converters,
        columns=pd.Index(names),
        is_all_numeric=all(feature.kind is FeatureKind.NUMERIC for feature in schema),
        listing=_names(f"{feature.name} ({feature.kind.value})" for feature in schema),
    )


_EMPTY_ROW: Mapping[str, Any] = {}


def _checked_row(index: int, row: Any, layout: _Layout, problems: _Problems) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        problems.add(
            {"row": index, "error": f"must be an object of feature values, got {_describe(row)}"}
        )
        return _EMPTY_ROW
    if row.keys() != layout.name_set:
        for name in layout.names:
            if name not in row:
                problems.add({"row": index, "field": name, "error": _MISSING_FIELD})
        for name in row:
            if name not in layout.name_set:
                problems.add({"row": index, "field": str(name), "error": _UNEXPECTED_FIELD})
    return row


def _feature_frame(arrays: list[np.ndarray], layout: _Layout) -> pd.DataFrame:
    if layout.is_all_numeric:
        # One float block: the cheapest frame pandas can build.
        return pd.DataFrame(np.column_stack(arrays), columns=layout.columns, copy=False)
    return _frame_from_arrays(arrays, layout.columns, pd.RangeIndex(len(arrays[0])))


_FROM_ARRAYS = getattr(pd.DataFrame, "_from_arrays", None)


def _frame_from_arrays(
    arrays: list[np.ndarray], columns: pd.Index, index: pd.Index
) -> pd.DataFrame:
    """A frame from 1-D column arrays of equal length, object arrays kept as object dtype.

    pandas 3's public constructor infers a `str` dtype from object arrays of text and costs
    several times more; this is the prediction hot path, so use the internal constructor when
    this pandas has it.
    """
    if _FROM_ARRAYS is not None:
        return cast(
            pd.DataFrame, _FROM_ARRAYS(arrays, columns=columns, index=index, verify_integrity=False)
        )
    series = {
        position: pd.Series(array, index=index, dtype=array.dtype, copy=False)
        for position, array in enumerate(arrays)
    }
    frame = pd.DataFrame(series, copy=False)
    frame.columns = columns
    return frame


# ---------------------------------------------------------------------------------------------
# Text cells
# ---------------------------------------------------------------------------------------------


def _missing_cells(cells: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, (pd.isna(cells) | pd.Series(cells).isin(_MISSING_MARKERS).to_numpy()))


def _numbers_from_text(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values of text cells (NaN where missing), and a mask of the bad cells.

    A bad cell is neither missing nor a finite number.
    """
    values = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan, copy=True
    )
    is_bad = np.isinf(values)
    # Only cells that did not parse can be missing markers: test those alone.
    not_parsed = np.flatnonzero(np.isnan(values))
    if len(not_parsed):
        is_bad[not_parsed] = ~_missing_cells(cells[not_parsed])
        values[not_parsed] = np.nan
    return values, is_bad


def _bad_numbers_text(name: str, cells: np.ndarray, is_bad: np.ndarray, first_row: int) -> str:
    positions = np.flatnonzero(is_bad)
    rows = ", ".join(str(int(p) + first_row) for p in positions[:_ROWS_IN_MESSAGE])
    more = len(positions) - _ROWS_IN_MESSAGE
    if more > 0:
        rows += f" and {more} more"
    return (
        f"column '{name}' is numeric but has values that are not finite numbers at data "
        f"row{'s' if len(positions) > 1 else ''} {rows} "
        f"(first: {_describe(str(cells[positions[0]]))}); "
        "use numbers, or leave a cell empty for a missing value"
    )


def _bad_number_details(
    name: str, cells: np.ndarray, is_bad: np.ndarray, first_row: int
) -> list[dict[str, Any]]:
    return [
        {
            "row": int(position) + first_row,
            "field": name,
            "error": f"must be a finite number or empty, got {_describe(str(cells[position]))}",
        }
        for position in np.flatnonzero(is_bad)[:MAX_DETAILS]
    ]


def _escape(cell: Any) -> Any:
    """The cell with a leading single quote when it is text a spreadsheet would run."""
    return "'" + cell if _needs_escape(cell) else cell


def _needs_escape(cell: Any) -> bool:
    return (
        isinstance(cell, str)
        and cell[:1] in _FORMULA_STARTS
        and _PLAIN_NUMBER.fullmatch(cell) is None
    )


def _escaped_cells(cells: np.ndarray) -> np.ndarray:
    """`cells` with `_escape` applied: the same array when no cell needs it.

    A column of text is escaped by one regular-expression pass over its cells joined with NUL,
    many times faster than a Python test per cell.
    """
    if infer_dtype(cells, skipna=False) == "string":
        joined = _CELL_SEPARATOR.join(cells)
        if not any(character in joined for character in _FORMULA_STARTS):
            return cells
        if joined.count(_CELL_SEPARATOR) == len(cells) - 1:  # else a cell holds NUL itself
            replaced = _FORMULA_IN_JOINED.sub(r"'\g<0>", joined)
            if len(replaced) == len(joined):
                return cells
            return _object_array(replaced.split(_CELL_SEPARATOR))
    if not any(map(_needs_escape, cells)):
        return cells
    return _object_array([_escape(cell) for cell in cells])


def _object_array(values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _check_features_present(columns: Sequence[str], schema: Sequence[Feature]) -> None:
    present = set(columns)
    missing = [feature.name for feature in schema if feature.name not in present]
    if missing:
        raise InvalidInput(
            f"the CSV lacks features the model needs: {_names(missing)}; "
            f"the CSV has: {_names(columns)}",
            details=[{"field": name, "error": _MISSING_FIELD} for name in missing][:MAX_DETAILS],
        )


# ---------------------------------------------------------------------------------------------
# File access and the shape check
# ---------------------------------------------------------------------------------------------

_NO_DATA_ROWS = "the CSV has a header but no data rows; add at least one row below the header"


@contextmanager
def _opened(source: BinaryIO | Path) -> Iterator[BinaryIO]:
    if isinstance(source, Path):
        with source.open("rb") as stream:
            yield stream
    else:
        yield source


@contextmanager
def _rewindable(source: BinaryIO | Path) -> Iterator[BinaryIO]:
    """The source as a seekable stream; a pipe or socket is spooled to a temporary file first."""
    with _opened(source) as stream:
        if stream.seekable():
            yield stream
            return
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            shutil.copyfileobj(stream, spool, _READ_BLOCK_BYTES)
            spool.seek(0)
            yield cast(BinaryIO, spool)


class _BinaryContent(Exception):
    """A NUL byte: the upload is not UTF-8 text."""

    def __init__(self, *, is_utf16: bool) -> None:
        super().__init__()
        self.is_utf16 = is_utf16


class _NulGuard(io.RawIOBase):
    """Reads the source unchanged, failing on the first NUL byte (text files have none)."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._is_first_read = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        if b"\x00" in data:
            # Excel's "Unicode text" is UTF-16: say so rather than call it binary.
            raise _BinaryContent(is_utf16=self._is_first_read and data[:2] in _UTF16_BOMS)
        self._is_first_read = False
        size = len(data)
        buffer[:size] = data
        return size


class _CsvRecords:
    """The header and data records of a CSV, read with the csv module and checked for shape.

    Decoding is strict UTF-8 (a BOM is skipped); blank lines are skipped; any problem becomes
    InvalidDataset with the line number (physical lines, the header being line 1).
    """

    def __init__(self, binary: BinaryIO) -> None:
        buffered = io.BufferedReader(_NulGuard(binary), _READ_BLOCK_BYTES)
        self._text = io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="strict", newline="")
        self._reader = csv.reader(self._text, strict=True)
        self.header = self._read_header()

    def batches(self, size: int) -> Iterator[list[list[str]]]:
        """Data records in lists of at most `size`; blank lines skipped, ragged rows refused."""
        # One flat loop: this runs once per row of files with millions of rows.
        reader = self._reader
        width = len(self.header)
        batch: list[list[str]] = []
        record_line = reader.line_num + 1  # where the record being read starts
        try:
            for row in reader:
                if len(row) == width:
                    batch.append(row)
                    if len(batch) == size:
                        yield batch
                        batch = []
                elif not _is_blank(row):
                    raise _ragged_row(reader.line_num, len(row), width)
                record_line = reader.line_num + 1
        except (_BinaryContent, UnicodeDecodeError, csv.Error) as exc:
            raise _unreadable(exc, record_line) from None
        if batch:
            yield batch

    def _read_header(self) -> list[str]:
        record_line = 1
        try:
            for row in self._reader:
                if not _is_blank(row):
                    return row
                record_line = self._reader.line_num + 1
        except (_BinaryContent, UnicodeDecodeError, csv.Error) as exc:
            raise _unreadable(exc, record_line) from None
        raise InvalidDataset(
            "the CSV is empty; upload a file with a header row naming the columns and data rows"
        )


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


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _scan(
    binary: BinaryIO, limits: DatasetLimits, check_header: Callable[[list[str]], None]
) -> list[str]:
    """Check the whole file's shape without keeping it; return the header."""
    records = _checked_records(binary, limits, check_header)
    header = records.header
    count = 0
    for batch in records.batches(min(limits.max_rows + 1, _SCAN_BATCH_ROWS)):
        count += len(batch)
        if count > limits.max_rows:
            raise DatasetTooLarge(
                f"the CSV has more than {limits.max_rows} data rows, the limit; "
                "upload a sample of the data"
            )
    if count == 0:
        raise InvalidDataset(_NO_DATA_ROWS)
    return header


def _checked_records(
    binary: BinaryIO, limits: DatasetLimits, check_header: Callable[[list[str]], None]
) -> _CsvRecords:
    records = _CsvRecords(binary)
    if len(records.header) > limits.max_columns:
        raise DatasetTooLarge(
            f"the CSV has {len(records.header)} columns; the limit is {limits.max_columns}"
        )
    _check_header_names(records.header)
    check_header(records.header)
    return records


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
            f"the header repeats column names: {_names(duplicated)}; "
            "give every column a unique name"
        )


def _check_training_header(header: list[str], target_variable: str) -> None:
    if target_variable not in header:
        raise InvalidDataset(f"column '{target_variable}' not found; the CSV has: {_names(header)}")
    if len(header) < 2:
        raise InvalidDataset(
            f"the CSV has only the target column '{target_variable}'; "
            "add at least one feature column"
        )


def _check_evaluation_header(header: list[str], names: list[str], target_variable: str) -> None:
    # The target is the request's own choice, not something the model needs: say so.
    if target_variable not in header:
        raise InvalidDataset(
            f"the CSV has no column '{target_variable}', the target_variable of this request; "
            f"name the column that holds the labels; the CSV has: {_names(header)}",
            details=[{"field": target_variable, "error": _MISSING_FIELD}],
        )
    _require_columns(header, names)


def _require_columns(header: list[str], needed: list[str]) -> None:
    present = set(header)
    missing = [name for name in needed if name not in present]
    if missing:
        raise InvalidDataset(
            f"the CSV lacks column{'s' if len(missing) > 1 else ''} the model needs: "
            f"{_names(missing)}; the CSV has: {_names(header)}",
            details=[{"field": name, "error": _MISSING_FIELD} for name in missing][:MAX_DETAILS],
        )


def _parse(
    binary: BinaryIO, header: list[str], limits: DatasetLimits, **options: Any
) -> pd.DataFrame:
    """pandas' read of a file `_scan` accepted; `header` replaces the names pandas would mangle."""
    try:
        return pd.read_csv(
            binary,
            compression=None,
            encoding="utf-8-sig",
            header=0,
            names=header,
            index_col=False,
            skip_blank_lines=True,
            low_memory=False,  # whole-column type inference: no column of mixed types
            nrows=limits.max_rows + 1,
            **options,
        )
    except (ValueError, OverflowError, csv.Error) as exc:
        raise InvalidDataset(f"the CSV could not be parsed: {exc}") from None


def _needs_text(column: pd.Series) -> bool:
    if _is_numeric(column):
        return False
    return infer_dtype(column, skipna=True) not in ("string", "empty")


def _is_numeric(column: pd.Series) -> bool:
    return is_numeric_dtype(column) and not is_bool_dtype(column)


# ---------------------------------------------------------------------------------------------
# Checking a parsed dataset
# ---------------------------------------------------------------------------------------------


def _dataset_from_frame(
    frame: pd.DataFrame, target_variable: str, limits: DatasetLimits, *, bool_columns: set[str]
) -> Dataset:
    if frame.empty:
        raise InvalidDataset(_NO_DATA_ROWS)
    target = _checked_target(frame[target_variable], target_variable, limits, min_classes=2)
    features = frame.drop(columns=[target_variable])
    schema = [_feature(features[name], bool_columns) for name in features.columns]
    _check_features(features, schema)
    for feature in schema:
        if feature.kind is FeatureKind.CATEGORICAL:
            features[feature.name] = _as_text_cells(features[feature.name])
    return Dataset(features=features, target=target, schema=schema, target_variable=target_variable)


def _feature(column: pd.Series, bool_columns: set[str]) -> Feature:
    name = str(column.name)
    if _is_numeric(column):
        return Feature(name=name, kind=FeatureKind.NUMERIC, dtype=str(column.dtype))
    dtype = "bool" if name in bool_columns else "str"
    return Feature(name=name, kind=FeatureKind.CATEGORICAL, dtype=dtype)


def _as_text_cells(column: pd.Series) -> pd.Series:
    cells = column.to_numpy(dtype=object, na_value=np.nan)
    return pd.Series(cells, index=column.index, name=column.name, dtype=object, copy=False)


def _checked_target(
    target: pd.Series, target_variable: str, limits: DatasetLimits, *, min_classes: int
) -> pd.Series:
    is_missing = target.isna().to_numpy()
    if is_missing.any():
        count = int(is_missing.sum())
        raise InvalidDataset(
            f"the target '{target_variable}' has {count} missing value{'s' if count > 1 else ''}, "
            f"at data {_row_numbers(is_missing)} (counting from 1 below the header); "
            "fill in the labels or drop those rows"
        )
    if isinstance(target.dtype, pd.StringDtype) or target.dtype == object:
        target = _as_text_cells(target)
    classes = target.unique()
    if len(classes) > limits.max_classes:
        raise InvalidDataset(
            f"the target '{target_variable}' has {len(classes)} distinct values, more than the "
            f"limit of {limits.max_classes} classes; fastml trains classifiers, so the target "
            "must be a label (is this column a continuous value?)"
        )
    if _is_continuous(target):
        raise InvalidDataset(
            f"the target '{target_variable}' holds fractional numbers (e.g. "
            f"{_fractional_example(target)}); fastml trains classifiers, which need labels: "
            "use text or whole numbers for the classes"
        )
    if len(classes) < min_classes:
        label = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]
        raise InvalidDataset(
            f"the target '{target_variable}' has a single class {label!r}; "
            "a classifier needs at least two"
        )
    return target


def _is_continuous(target: pd.Series) -> bool:
    # scikit-learn's classifiers refuse float labels that are not whole numbers.
    if not _is_numeric(target) or target.dtype.kind != "f":
        return False
    values = target.to_numpy(dtype=np.float64)
    return not np.array_equal(values, np.round(values))


def _fractional_example(target: pd.Series) -> float:
    values = target.to_numpy(dtype=np.float64)
    return float(values[values != np.round(values)][0])


def _check_features(features: pd.DataFrame, schema: list[Feature]) -> None:
    empty = [feature.name for feature in schema if features[feature.name].isna().all()]
    if empty:
        listed = ", ".join(f"'{name}'" for name in empty)
        raise InvalidDataset(
            f"column{'s' if len(empty) > 1 else ''} {listed} "
            f"{'are' if len(empty) > 1 else 'is'} entirely empty; "
            "fill in values or remove the column"
        )
    for feature in schema:
        if feature.kind is not FeatureKind.NUMERIC:
            continue
        values = features[feature.name].to_numpy(dtype=np.float64, na_value=np.nan)
        is_infinite = np.isinf(values)
        if is_infinite.any():
            raise InvalidDataset(
                f"column '{feature.name}' has infinite values (inf or -inf) at data "
                f"{_row_numbers(is_infinite)}; replace them with numbers or leave the cells empty"
            )


def _row_numbers(mask: np.ndarray) -> str:
    """'row 3' or 'rows 3, 8, ...': 1-based positions of the True cells."""
    positions = np.flatnonzero(mask)
    shown = ", ".join(str(int(position) + 1) for position in positions[:_ROWS_IN_MESSAGE])
    more = ", ..." if len(positions) > _ROWS_IN_MESSAGE else ""
    return f"row{'s' if len(positions) > 1 else ''} {shown}{more}"


def _names(names: Iterable[str]) -> str:
    listed = list(names)
    shown = ", ".join(listed[:_NAMES_IN_MESSAGE])
    more = len(listed) - _NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")
