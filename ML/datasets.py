"""Training and evaluation datasets: a labelled CSV read whole, checked, and typed per column."""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype, is_bool_dtype, is_numeric_dtype

from ML.csv_reader import NO_DATA_ROWS, READ_BLOCK_BYTES, CsvReader, opened
from ML.errors import DatasetTooLarge, InvalidDataset, InvalidInput
from ML.features import Feature, FeatureKind, features_from_text_frame, recorded_categories
from ML.messages import MAX_DETAILS, MISSING_FIELD, ROWS_IN_MESSAGE, listed_names

_SPOOL_BYTES = 32 << 20
_SCAN_BATCH_ROWS = 10_000
# Rows read by check_training_csv_start: enough for a header-and-shape check, cheap at any size.
_START_CHECK_ROWS = 1_000


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

    The file is read twice: once by `CsvReader` to check its shape (encoding, NUL bytes,
    quoting, ragged rows, row limit) with exact line numbers, then by pandas for type inference.
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
        reader = _checked_reader(
            binary, limits, lambda names: _check_training_header(names, target_variable)
        )
        next(reader.batches(_START_CHECK_ROWS))
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
        raise InvalidDataset(NO_DATA_ROWS)
    target = _checked_target(frame[target_variable], target_variable, limits, min_classes=1)
    try:
        features = features_from_text_frame(frame, schema, first_row_number=1)
    except InvalidInput as exc:
        raise InvalidDataset(exc.message, details=exc.details) from None
    return features, target


@contextmanager
def _rewindable(source: BinaryIO | Path) -> Iterator[BinaryIO]:
    """The source as a seekable stream; a pipe or socket is spooled to a temporary file first."""
    with opened(source) as stream:
        if stream.seekable():
            yield stream
            return
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            shutil.copyfileobj(stream, spool, READ_BLOCK_BYTES)
            spool.seek(0)
            yield cast(BinaryIO, spool)


def _scan(
    binary: BinaryIO, limits: DatasetLimits, check_header: Callable[[list[str]], None]
) -> list[str]:
    """Check the whole file's shape without keeping it; return the header."""
    reader = _checked_reader(binary, limits, check_header)
    count = 0
    for records in reader.batches(min(limits.max_rows + 1, _SCAN_BATCH_ROWS)):
        count += records.rows
        if count > limits.max_rows:
            raise DatasetTooLarge(
                f"the CSV has more than {limits.max_rows} data rows, the limit; "
                "upload a sample of the data"
            )
    return reader.header


def _checked_reader(
    binary: BinaryIO, limits: DatasetLimits, check_header: Callable[[list[str]], None]
) -> CsvReader:
    reader = CsvReader(binary, max_columns=limits.max_columns)
    check_header(reader.header)
    return reader


def _check_training_header(header: list[str], target_variable: str) -> None:
    if target_variable not in header:
        raise InvalidDataset(
            f"column '{target_variable}' not found; the CSV has: {listed_names(header)}"
        )
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
            f"name the column that holds the labels; the CSV has: {listed_names(header)}",
            details=[{"field": target_variable, "error": MISSING_FIELD}],
        )
    _require_columns(header, names)


def _require_columns(header: list[str], needed: list[str]) -> None:
    present = set(header)
    missing = [name for name in needed if name not in present]
    if missing:
        raise InvalidDataset(
            f"the CSV lacks column{'s' if len(missing) > 1 else ''} the model needs: "
            f"{listed_names(missing)}; the CSV has: {listed_names(header)}",
            details=[{"field": name, "error": MISSING_FIELD} for name in missing][:MAX_DETAILS],
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
        raise InvalidDataset(NO_DATA_ROWS)
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
    return Feature(
        name=name,
        kind=FeatureKind.CATEGORICAL,
        dtype=dtype,
        categories=recorded_categories(column),
    )


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
    shown = ", ".join(str(int(position) + 1) for position in positions[:ROWS_IN_MESSAGE])
    more = ", ..." if len(positions) > ROWS_IN_MESSAGE else ""
    return f"row{'s' if len(positions) > 1 else ''} {shown}{more}"
