"""Small labelled CSVs of plain numbers read without pandas, for evaluation: the feature matrix
and the labels exactly as the pandas readers give them, or None wherever that is not certain.

A pandas read costs about a millisecond whatever the size, more than a compiled forest's
prediction of a few hundred rows; a fast-ml client posts a 45-row file on every request.
Anything outside the plain case (quotes, lone CRs, NUL bytes, blank lines, a header the checked
reader would refuse, cells that are not short decimals, labels pandas could read as numbers or
booleans) returns None, and the caller reads the file the general way, errors included.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from ML.datasets import DatasetLimits
from ML.features import MISSING_MARKERS, Feature, FeatureKind
from ML.frames import object_array

# Files above this size take the general reader: its fixed cost no longer dominates.
MAX_PLAIN_BYTES = 256 << 10
_UTF8_BOM = b"\xef\xbb\xbf"
# At most 15 significant digits and no exponent: every correctly rounded parser gives the same
# double, so Python's float() agrees with pandas (tests/ML/test_evaluation.py checks 20,000
# random cells). One difference is harmless: float("-0") is -0.0 where pandas gives 0.0; the
# two compare equal at every step of the compiled pipeline, so predictions are the same.
_SHORT_DECIMAL_CELL = re.compile(r"[+-]?(?=[0-9.]{1,16}\n)(?:[0-9]+\.?[0-9]*|\.[0-9]+)\n")
_LONGEST_SHORT_DECIMAL = 16  # a sign and 15 digits and a dot, or 16 of those without a sign
# A short decimal's characters, each made an "x" (a line end stays as it is).
_TO_X = bytes.maketrans(b"0123456789.+-", b"x" * 13)
_INTEGER_LABEL = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
# Words that pandas reads as booleans, or that Python's float() takes: not plain text labels.
_NOT_TEXT = frozenset({"true", "false", "inf", "+inf", "-inf", "infinity", "+infinity"})


@dataclass(frozen=True)
class PlainEvaluationData:
    features: np.ndarray  # float64 (rows, features), schema order, NaN where missing
    target: np.ndarray  # int64, or object of str: as pandas would have read the column


def read_plain_evaluation_csv(
    content: bytes, target_variable: str, schema: Sequence[Feature], limits: DatasetLimits
) -> PlainEvaluationData | None:
    """The features and labels of `content`, or None when the general reader must decide."""
    if len(content) > MAX_PLAIN_BYTES or b'"' in content or b"\x00" in content:
        return None
    if any(feature.kind is not FeatureKind.NUMERIC for feature in schema):
        return None
    if content.startswith(_UTF8_BOM):
        content = content[len(_UTF8_BOM) :]
    if b"\r" in content:
        if content.count(b"\r") != content.count(b"\r\n"):
            return None  # a lone CR ends a line for the csv module
        content = content.replace(b"\r\n", b"\n")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or len(lines) - 1 > limits.max_rows:
        return None
    header = lines[0].split(",")
    if len(header) > limits.max_columns:
        return None
    names = [feature.name for feature in schema]
    if not _is_plain_header(header, [*names, target_variable]):
        return None
    width = len(header)
    rows = [line.split(",") for line in lines[1:]]
    if set(map(len, rows)) != {width}:
        return None  # ragged or blank lines: the checked reader names them
    columns = list(zip(*rows, strict=True))
    features = _feature_matrix([columns[header.index(name)] for name in names], len(rows))
    if features is None:
        return None
    labels = columns[header.index(target_variable)]
    if len(set(labels)) > limits.max_classes:
        return None
    target = _labels(labels)
    return None if target is None else PlainEvaluationData(features, target)


def _is_plain_header(header: list[str], needed: list[str]) -> bool:
    # The checked reader refuses unnamed and repeated columns; evaluation refuses a target that is
    # also a feature. Leave each of those to it, for its message.
    return (
        all(name.strip() for name in header)
        and len(set(header)) == len(header)
        and len(set(needed)) == len(needed)
        and set(needed) <= set(header)
    )


def _feature_matrix(columns: list[Sequence[str]], rows: int) -> np.ndarray | None:
    """The float64 matrix (rows, columns) of the cells, or None if one is not a short decimal
    or a missing marker."""
    cells = list(chain.from_iterable(columns))
    if _are_short_decimal_forms("\n".join(cells)):
        # float() takes a string of these characters only in the regex's forms, and raises on
        # the rest ("", ".", "+", "1.2.3", "1-2"): one conversion pass instead of one regex
        # match per cell (a regex match costs more than the float() itself).
        try:
            values = np.fromiter(map(float, cells), np.float64, len(cells))
        except ValueError:
            pass
        else:
            return np.ascontiguousarray(values.reshape(len(columns), rows).T)
    features = np.empty((rows, len(columns)), dtype=np.float64)
    for position, column in enumerate(columns):
        numbers = _numbers(column)
        if numbers is None:
            return None
        features[:, position] = numbers
    return features


def _are_short_decimal_forms(joined: str) -> bool:
    """Whether every LF-separated cell of `joined` is 1 to 16 of "0-9.+-": each is then a short
    decimal if float() takes it (the sign, which the regex leaves out of the 16, only makes this
    stricter)."""
    shape = joined.encode().translate(_TO_X)
    return not shape.translate(None, b"x\n") and b"x" * (_LONGEST_SHORT_DECIMAL + 1) not in shape


def _numbers(cells: Sequence[str]) -> list[float] | None:
    """The cells as floats, NaN where missing; None if one is neither."""
    values = []
    for cell in cells:
        if _SHORT_DECIMAL_CELL.fullmatch(cell + "\n"):
            values.append(float(cell))
        elif cell in MISSING_MARKERS:
            values.append(np.nan)
        else:
            return None
    return values


def _labels(cells: Sequence[str]) -> np.ndarray | None:
    """The labels pandas would read: whole numbers as int64; text as written when at least one
    cell can only be text (then pandas keeps the whole column as text). Else None."""
    if all(_INTEGER_LABEL.fullmatch(cell) for cell in cells):
        return np.array([int(cell) for cell in cells], dtype=np.int64)
    if not MISSING_MARKERS.isdisjoint(cells):
        return None  # a missing label: the general reader says where
    if any(_is_only_text(cell) for cell in cells):
        return object_array(cells)
    return None


def _is_only_text(cell: str) -> bool:
    if cell.strip().lower() in _NOT_TEXT or not any(char.isalpha() for char in cell):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False
