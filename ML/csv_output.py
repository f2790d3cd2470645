"""CSV output of predictions: records as written plus added columns, UTF-8 with CRLF line
ends, text escaped against spreadsheet formula injection.

A text cell (or header name) starting with `=`, `+`, `-`, `@`, tab or CR gets a leading single
quote, as OWASP recommends ("CSV injection"), unless it is a plain number: optional sign, digits
with an optional decimal point, optional exponent ("-1.5", "+1e5", "-.5"). Such a cell is data (a
spreadsheet reads it as that number, it runs nothing), and escaping it would corrupt it into
text; "-1+2", "-inf" or "--1" are not plain numbers and are escaped. Added numeric columns are
written as numbers (as `DataFrame.to_csv` writes them) and never escaped.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from ML.frames import object_array

_FORMULA_STARTS = frozenset("=+-@\t\r")
# The sign of a plain number is matched apart, in the patterns below.
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
_LINE_END = "\r\n"  # as RFC 4180 says: the csv writer then quotes any cell holding CR or LF


def csv_from_lines(
    body: bytes, rows: int, added: Mapping[str, np.ndarray], header: Sequence[str] | None
) -> bytes:
    """`rows` unquoted one-line records (`body`, UTF-8, LF line ends) as written, escaped where
    needed, each followed by its `added` cells; the header row first when `header` names the
    input columns.

    The same bytes as the csv module's writer gives for the parsed cells, without a Python step
    per cell: the escape is one regular-expression pass, an added column is formatted once per
    distinct value.
    """
    if any(character in body for character in _FORMULA_BYTES):
        body = _FORMULA_IN_LINES.sub(rb"'\g<0>", body)
    lines = body.split(b"\n")
    lines.pop()  # the text after the last line end: empty
    cells = [_csv_cells(values, rows) for values in added.values()]
    records = zip(lines, *cells, itertools.repeat(b"\r\n", len(lines)), strict=True)
    text = b"".join(itertools.chain.from_iterable(records))
    return _header_line([*header, *added]) + text if header is not None else text


def csv_from_cells(
    columns: Sequence[np.ndarray],
    rows: int,
    added: Mapping[str, np.ndarray],
    header: Sequence[str] | None,
) -> bytes:
    """Records given as columns of text cells, escaped, plus the `added` columns, written by
    the csv module; the header row first when `header` names the input columns."""
    texts = [escaped_cells(cells).tolist() for cells in columns]
    texts.extend(_csv_texts(values, rows) for values in added.values())
    out = io.StringIO()
    csv.writer(out, lineterminator=_LINE_END).writerows(zip(*texts, strict=True))
    data = out.getvalue().encode("utf-8")
    return _header_line([*header, *added]) + data if header is not None else data


def escape(cell: Any) -> Any:
    """The cell with a leading single quote when it is text a spreadsheet would run."""
    return "'" + cell if _needs_escape(cell) else cell


def escaped_cells(cells: np.ndarray) -> np.ndarray:
    """`cells` with `escape` applied: the same array when no cell needs it.

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
            return object_array(replaced.split(_CELL_SEPARATOR))
    if not any(map(_needs_escape, cells)):
        return cells
    return object_array([escape(cell) for cell in cells])


def _needs_escape(cell: Any) -> bool:
    return (
        isinstance(cell, str)
        and cell[:1] in _FORMULA_STARTS
        and _PLAIN_NUMBER.fullmatch(cell) is None
    )


def _header_line(names: Sequence[str]) -> bytes:
    line = io.StringIO()
    csv.writer(line, lineterminator=_LINE_END).writerow([escape(name) for name in names])
    return line.getvalue().encode("utf-8")


def _csv_texts(values: np.ndarray, rows: int) -> list[str]:
    """Each value as `DataFrame.to_csv` writes it (before quoting), text escaped."""
    codes, texts = _encoded_values(values, rows)
    return object_array(texts).take(codes).tolist()


def _csv_cells(values: np.ndarray, rows: int) -> list[bytes]:
    """Each value as a CSV cell in UTF-8 after a comma: escaped, and quoted when needed."""
    codes, texts = _encoded_values(values, rows)
    table = object_array([b"," + _quoted(text).encode("utf-8") for text in texts])
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
        texts = [escape(value) if isinstance(value, str) else str(value) for value in distinct]
    texts.append("")  # the code of a missing value, -1, takes the last one
    return codes, texts


def _quoted(text: str) -> str:
    """The cell as the csv module's writer quotes it (QUOTE_MINIMAL, CRLF line ends)."""
    if any(character in text for character in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
