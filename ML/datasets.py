"""CSV datasets: reading and checking uploads, and turning prediction input into feature frames."""

from __future__ import annotations

import csv
import io
import math
import numbers
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
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
_READ_BLOCK_BYTES = 1 << 20
_SPOOL_BYTES = 32 << 20
_SCAN_BATCH_ROWS = 10_000
# Rows read by check_training_csv_start: enough for a header-and-shape check, cheap at any size.
_START_CHECK_ROWS = 1_000
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


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
        header = _scan(binary, limits, lambda found: _require_columns(found, needed))
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
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    with _opened(source) as binary:
        records = _CsvRecords(binary)
        _check_header_names(records.header)
        columns = pd.Index(records.header)
        emitted = 0
        for batch in records.batches(chunk_rows):
            yield _text_frame(batch, columns, emitted)
            emitted += len(batch)
        if emitted == 0:
            raise InvalidDataset(_NO_DATA_ROWS)


def features_from_text_frame(
    frame: pd.DataFrame, schema: Sequence[Feature], first_row_number: int
) -> pd.DataFrame:
    """Feature frame (schema order) from a frame of CSV text cells.

    Numeric features: numbers as float64; a missing cell (empty or an NA string) is NaN; other
    text, inf or -inf raise InvalidInput naming the column and the first bad data rows, numbered
    from `first_row_number` for the frame's first row. Categorical features: the text, or NaN
    when missing. Extra columns are ignored.
    """
    missing = [feature.name for feature in schema if feature.name not in frame.columns]
    if missing:
        raise InvalidInput(
            f"the CSV lacks features the model needs: {_names(missing)}; "
            f"the CSV has: {_names(map(str, frame.columns))}",
            details=[{"field": name, "error": _MISSING_FIELD} for name in missing][:MAX_DETAILS],
        )
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

    Every text cell (and header name) starting with `=`, `+`, `-`, `@`, tab or CR gets a leading
    single quote, as OWASP recommends. Numeric columns are written as numbers, so -1.5 in a
    float column stays -1.5; a text cell such as "-1" in a passed-through text column is
    escaped to "'-1" because a spreadsheet would evaluate it.
    """
    escaped = frame.copy(deep=False)
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if is_numeric_dtype(column):
            continue
        cells = column.to_numpy(dtype=object)
        if _has_formula(cells):
            escaped.isetitem(position, np.array([_escape(cell) for cell in cells], dtype=object))
    labels: bool | list[str] = [_escape(str(name)) for name in frame.columns] if header else False
    # CRLF as RFC 4180 says: the csv writer then quotes any cell holding CR or LF.
    text = escaped.to_csv(index=False, header=labels, lineterminator="\r\n", na_rep="")
    return text.encode("utf-8")


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


def _has_formula(cells: np.ndarray) -> bool:
    # A set of first characters: several times faster than a test per cell, and most
    # columns have none to escape.
    first_characters = {cell[:1] for cell in cells if isinstance(cell, str)}
    return not first_characters.isdisjoint(_FORMULA_STARTS)


def _escape(cell: Any) -> Any:
    return "'" + cell if isinstance(cell, str) and cell[:1] in _FORMULA_STARTS else cell


def _text_frame(batch: list[list[str]], columns: pd.Index, start: int) -> pd.DataFrame:
    arrays = []
    for column in zip(*batch, strict=True):
        array = np.empty(len(batch), dtype=object)
        array[:] = column
        arrays.append(array)
    return _frame_from_arrays(arrays, columns, pd.RangeIndex(start, start + len(batch)))


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
