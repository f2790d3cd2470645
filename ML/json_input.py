"""JSON prediction input: rows or columns of feature values checked against a model's
features and turned into a feature frame (or a float matrix for a compiled forest)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ML.errors import InvalidInput
from ML.features import Feature, FeatureKind
from ML.frames import frame_from_arrays, object_array
from ML.messages import MAX_DETAILS, MISSING_FIELD, UNEXPECTED_FIELD, described, listed_names

_PROBLEMS_IN_MESSAGE = 5


def frame_from_rows(rows: Sequence[Mapping[str, Any]], schema: Sequence[Feature]) -> pd.DataFrame:
    """Feature frame from JSON rows (`[{"feature": value, ...}, ...]`), in schema order.

    Accepted values: numeric features take int or float (bool and strings are not numbers);
    categorical features take strings, and also numbers and booleans, which are converted with
    `str()` (CSV category codes are often numeric-looking, and pandas writes booleans as
    True/False), so a category is matched by its text, e.g. 7 -> "7", 1.5 -> "1.5".
    `None` means missing for any feature; the pipeline imputes it. Every bad field is reported
    in `InvalidInput.details` as `{"row", "field", "error"}`.
    """
    layout = _layout_of(schema)
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
    layout = _layout_of(schema)
    if not layout.is_all_numeric:
        raise ValueError("matrix_from_rows needs a schema of numeric features only")
    if isinstance(rows, list) and rows:
        matrix = _complete_number_matrix(rows, layout.names, layout.name_set)
        if matrix is not None:
            return matrix
    return frame_from_rows(rows, schema).to_numpy(dtype=np.float64)


def frame_from_columns(
    columns: Mapping[str, Sequence[Any]], schema: Sequence[Feature]
) -> pd.DataFrame:
    """Feature frame from column-oriented JSON (`{"feature": [v0, v1, ...], ...}`).

    Values follow the rules of `frame_from_rows`; every column must have the same length.
    """
    layout = _layout_of(schema)
    if not isinstance(columns, Mapping):
        raise InvalidInput(
            "columns must be an object mapping each feature to a list of values",
            details=[{"field": "columns", "error": "must be an object"}],
        )
    problems = _Problems()
    for name in layout.names:
        if name not in columns:
            problems.add({"field": name, "error": MISSING_FIELD})
    for name in columns:
        if name not in layout.name_set:
            problems.add({"field": str(name), "error": UNEXPECTED_FIELD})
    for name in layout.names:
        values = columns.get(name)
        if name in columns and not _is_value_list(values):
            problems.add(
                {"field": name, "error": f"must be a list of values, got {described(values)}"}
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
    return detail["error"] in (MISSING_FIELD, UNEXPECTED_FIELD)


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


# The checks below are loops, not all() over a generator: that costs a generator and a
# function object per call, ~2,000 instructions, as much as the rest of a one-row check.


def _complete_number_matrix(
    rows: list[Any], names: tuple[str, ...], name_set: frozenset[str]
) -> np.ndarray | None:
    """`_number_matrix` of rows that are each an object with exactly these feature names, or
    None. One loop that checks and collects (the JSON predict route's every request): a
    call per check cost a one-row request ~1,000 instructions more."""
    values: list[Any] = []
    for row in rows:
        if not isinstance(row, dict) or row.keys() != name_set:
            return None
        for name in names:
            value = row[name]
            # As _are_finite_numbers: finite int or float, not bool.
            if not (type(value) is int or (type(value) is float and value - value == 0.0)):
                return None
            values.append(value)
    try:
        return np.array(values, dtype=np.float64).reshape(len(rows), len(names))
    except OverflowError:
        return None


def _are_finite_numbers(values: list[Any]) -> bool:
    # `x - x == 0` is False for nan, inf and -inf; type checks exclude bool, a subclass of int.
    for value in values:
        if not (type(value) is int or (type(value) is float and value - value == 0.0)):
            return False
    return True


def _numeric_values(values: list[Any], name: str, problems: _Problems) -> np.ndarray:
    if _are_finite_numbers(values):
        try:
            return np.array(values, dtype=np.float64)
        except OverflowError:
            pass  # an int beyond float64; reported below
    return _converted(values, _as_number, np.float64, name, problems)


def _converted(
    values: list[Any],
    convert: Callable[[Any], tuple[Any, str | None]],
    dtype: type,
    name: str,
    problems: _Problems,
) -> np.ndarray:
    """Each value converted one by one, each failure added to `problems` with its row."""
    array: np.ndarray = np.empty(len(values), dtype=dtype)
    for index, value in enumerate(values):
        array[index], error = convert(value)
        if error:
            problems.add({"row": index, "field": name, "error": error})
    return array


def _as_number(value: Any) -> tuple[float, str | None]:
    if value is None:
        return math.nan, None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return math.nan, f"must be a number or null, got {described(value)}"
    try:
        number = float(value)
    except OverflowError:
        return math.nan, "is too large for a 64-bit float"
    if not math.isfinite(number):
        return math.nan, f"must be a finite number or null, got {number}"
    return number, None


def _categorical_values(values: list[Any], name: str, problems: _Problems) -> np.ndarray:
    if all(type(value) is str for value in values):
        return object_array(values)
    return _converted(values, _as_category, object, name, problems)


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
    return np.nan, f"must be a string, number or null, got {described(value)}"


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


# The last tuple schema asked for and its layout. A served model passes the same tuple on
# every request: found by identity, it skips hashing the schema for the cache below, which
# calls each Feature's (and its kind's) Python __hash__: ~6,000 instructions a request.
_last_layout: tuple[tuple[Feature, ...], _Layout] | None = None


def _layout_of(schema: Sequence[Feature]) -> _Layout:
    global _last_layout
    last = _last_layout
    if last is not None and last[0] is schema:
        return last[1]
    layout = _layout(tuple(schema))
    if isinstance(schema, tuple):  # immutable, so a match by identity stays right
        _last_layout = (schema, layout)
    return layout


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
        listing=listed_names(f"{feature.name} ({feature.kind.value})" for feature in schema),
    )


_EMPTY_ROW: Mapping[str, Any] = {}


def _checked_row(index: int, row: Any, layout: _Layout, problems: _Problems) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        problems.add(
            {"row": index, "error": f"must be an object of feature values, got {described(row)}"}
        )
        return _EMPTY_ROW
    if row.keys() != layout.name_set:
        for name in layout.names:
            if name not in row:
                problems.add({"row": index, "field": name, "error": MISSING_FIELD})
        for name in row:
            if name not in layout.name_set:
                problems.add({"row": index, "field": str(name), "error": UNEXPECTED_FIELD})
    return row


def _feature_frame(arrays: list[np.ndarray], layout: _Layout) -> pd.DataFrame:
    if layout.is_all_numeric:
        # One float block: the cheapest frame pandas can build.
        return pd.DataFrame(np.column_stack(arrays), columns=layout.columns, copy=False)
    return frame_from_arrays(arrays, layout.columns, pd.RangeIndex(len(arrays[0])))
