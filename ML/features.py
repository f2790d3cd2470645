"""A model's input features: what training records of each column, and feature frames built
from CSV text cells (CSV prediction and evaluation read them the same way)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import numpy as np
import pandas as pd

from ML.errors import InvalidInput
from ML.frames import frame_from_arrays
from ML.messages import MAX_DETAILS, MISSING_FIELD, ROWS_IN_MESSAGE, described, listed_names

# pandas' default NA strings: read_csv turns them into NaN at training time, so every other
# path (CSV prediction, evaluation) must treat the same cells as missing.
MISSING_MARKERS = frozenset(
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


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


# A categorical column with more distinct values than this is an id or free text rather than
# a choice: its categories are not recorded (the console then offers a text box, not a list).
MAX_RECORDED_CATEGORIES = 1000


@dataclass(frozen=True)
class Feature:
    """One input column of a model, as recorded at training time."""

    name: str
    kind: FeatureKind
    dtype: str
    # A categorical feature's categories in the training CSV, sorted; None for a numeric
    # feature, a column of too many, or a model trained before they were recorded. Left out of
    # equality and hashing: input checks depend on name, kind and dtype, and the per-request
    # layout cache should not hash a thousand strings.
    categories: tuple[str, ...] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind.value, "dtype": self.dtype}
        if self.categories is not None:
            data["categories"] = list(self.categories)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Feature:
        categories = data.get("categories")
        return cls(
            name=data["name"],
            kind=FeatureKind(data["kind"]),
            dtype=data["dtype"],
            categories=None if categories is None else tuple(categories),
        )


def recorded_categories(cells: pd.Series) -> tuple[str, ...] | None:
    """The distinct non-missing text cells of a categorical column, sorted; None past
    MAX_RECORDED_CATEGORIES."""
    values = pd.unique(cells.dropna())
    if len(values) > MAX_RECORDED_CATEGORIES:
        return None
    return tuple(sorted(str(value) for value in values))


def features_from_text_frame(
    frame: pd.DataFrame, schema: Sequence[Feature], first_row_number: int
) -> pd.DataFrame:
    """Feature frame (schema order) from a frame of CSV text cells.

    Numeric features: numbers as float64; a missing cell (empty or an NA string) is NaN; other
    text, inf or -inf raise InvalidInput naming the column and the first bad data rows, numbered
    from `first_row_number` for the frame's first row. Categorical features: the text, or NaN
    when missing. Extra columns are ignored.
    """
    check_features_present([str(name) for name in frame.columns], schema)
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
    return frame_from_arrays(arrays, pd.Index([f.name for f in schema]), pd.RangeIndex(len(frame)))


def check_features_present(columns: Sequence[str], schema: Sequence[Feature]) -> None:
    """InvalidInput naming each feature of `schema` that `columns` lack."""
    present = set(columns)
    missing = [feature.name for feature in schema if feature.name not in present]
    if missing:
        raise InvalidInput(
            f"the CSV lacks features the model needs: {listed_names(missing)}; "
            f"the CSV has: {listed_names(columns)}",
            details=[{"field": name, "error": MISSING_FIELD} for name in missing][:MAX_DETAILS],
        )


def _missing_cells(cells: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, (pd.isna(cells) | pd.Series(cells).isin(MISSING_MARKERS).to_numpy()))


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
    rows = ", ".join(str(int(p) + first_row) for p in positions[:ROWS_IN_MESSAGE])
    more = len(positions) - ROWS_IN_MESSAGE
    if more > 0:
        rows += f" and {more} more"
    return (
        f"column '{name}' is numeric but has values that are not finite numbers at data "
        f"row{'s' if len(positions) > 1 else ''} {rows} "
        f"(first: {described(str(cells[positions[0]]))}); "
        "use numbers, or leave a cell empty for a missing value"
    )


def _bad_number_details(
    name: str, cells: np.ndarray, is_bad: np.ndarray, first_row: int
) -> list[dict[str, Any]]:
    return [
        {
            "row": int(position) + first_row,
            "field": name,
            "error": f"must be a finite number or empty, got {described(str(cells[position]))}",
        }
        for position in np.flatnonzero(is_bad)[:MAX_DETAILS]
    ]
