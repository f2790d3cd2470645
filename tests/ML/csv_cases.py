"""CSV cases shared by the tests of the CSV modules, and the reference writer the fast chunk
writers are compared with."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
from pandas.api.types import is_numeric_dtype

from ML.csv_chunks import read_csv_chunks
from ML.csv_output import escape, escaped_cells
from ML.features import Feature, FeatureKind

NUMERIC = FeatureKind.NUMERIC
CATEGORICAL = FeatureKind.CATEGORICAL
SCHEMA = [
    Feature("size", NUMERIC, "float64"),
    Feature("color", CATEGORICAL, "str"),
    Feature("weight", NUMERIC, "int64"),
]

MIXED_CELLS = [
    ["1.5", "red", "3", "a, b"],
    ["", "NA", "-2", 'say "hi"'],
    ["-0.5", "", "1e3", "two\nlines"],
    ["NA", "blue", "007", "=1+2"],
    [" 2 ", "null", "", "café"],
    ["+4", "-1", "nan", "-1.5"],
    ["1e-3", "=x", "5", ""],
]

# (cell, whether it is escaped): a plain number is data, whatever its sign.
ESCAPES = [
    ("-1", False),
    ("+1e5", False),
    ("-.5", False),
    ("-5.", False),
    ("+.5e-3", False),
    ("-1E+05", False),
    ("1e5", False),
    ("-", True),
    ("+", True),
    ("-.", True),
    ("--1", True),
    ("-1-2", True),
    ("-1e", True),
    ("- 1", True),
    ("-1 ", True),
    ("-inf", True),
    ("-nan", True),
    ("-\u0663", True),  # an Arabic-Indic digit: not a plain (ASCII) number
    ("=1", True),
    ("@", True),
    ("\t1", True),
    ("a-1", False),
]


class Unseekable(io.RawIOBase):
    """A pipe-like binary stream: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 7))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def csv_from_rows(rows: list[list[str]], *, quote_all: bool) -> bytes:
    def cell(text: str) -> str:
        needs = quote_all or any(character in text for character in ',"\r\n')
        return '"' + text.replace('"', '""') + '"' if needs else text

    lines = [
        ",".join(cell(text) for text in row) for row in [["size", "color", "weight", "note"], *rows]
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def iter_csv_chunks(source: BinaryIO | Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The frames of `read_csv_chunks`: every cell as the text written, index = row position."""
    for chunk in read_csv_chunks(source, chunk_rows):
        yield chunk.frame


def csv_bytes(frame: pd.DataFrame, *, header: bool) -> bytes:
    """The reference for the chunk writers: the frame as `DataFrame.to_csv` writes it (UTF-8,
    CRLF line ends), text cells and header names escaped, numeric columns never."""
    escaped = frame.copy(deep=False)
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if is_numeric_dtype(column):
            continue
        cells = column.to_numpy(dtype=object)
        escaped_column = escaped_cells(cells)
        if escaped_column is not cells:
            escaped.isetitem(position, escaped_column)
    labels: bool | list[str] = [escape(str(name)) for name in frame.columns] if header else False
    text = escaped.to_csv(index=False, header=labels, lineterminator="\r\n", na_rep="")
    return text.encode("utf-8")
