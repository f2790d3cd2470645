"""Tests for ML/csv_output.py: formula escaping, and the chunk writers' bytes against the
reference writer (pandas' to_csv)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from ML.csv_chunks import read_csv_chunks
from ML.csv_output import escape, escaped_cells
from tests.ML.csv_cases import ESCAPES, MIXED_CELLS, csv_bytes, csv_from_rows

# ---------------------------------------------------------------------------------------------
# csv_bytes, the reference writer
# ---------------------------------------------------------------------------------------------


def test_csv_bytes_escapes_formula_cells_but_not_numbers() -> None:
    frame = pd.DataFrame(
        {
            "text": ["=1+2", "+x", "-1", "@sum", "\tx", "\rx", "ok", "a=b", None],
            "number": [-1.5, 2.0, -3.0, 0.0, 1.0, 1.0, 1.0, 1.0, float("nan")],
            "count": [-1, 2, 3, 4, 5, 6, 7, 8, 9],
        }
    )

    rows = list(csv.reader(io.StringIO(csv_bytes(frame, header=True).decode(), newline="")))

    # "-1" in a text column is a plain number: data, not a formula, so it is not escaped.
    assert rows == [
        ["text", "number", "count"],
        ["'=1+2", "-1.5", "-1"],
        ["'+x", "2.0", "2"],
        ["-1", "-3.0", "3"],
        ["'@sum", "0.0", "4"],
        ["'\tx", "1.0", "5"],
        ["'\rx", "1.0", "6"],
        ["ok", "1.0", "7"],
        ["a=b", "1.0", "8"],
        ["", "", "9"],
    ]


def test_csv_bytes_escapes_text_but_not_plain_numbers() -> None:
    frame = pd.DataFrame({"cell": [cell for cell, _ in ESCAPES]}, dtype=object)

    rows = list(csv.reader(io.StringIO(csv_bytes(frame, header=False).decode(), newline="")))

    assert [row[0] for row in rows] == [
        "'" + cell if is_escaped else cell for cell, is_escaped in ESCAPES
    ]


@pytest.mark.parametrize(("cell", "is_escaped"), ESCAPES)
def test_escape_quotes_text_a_spreadsheet_would_run(cell: str, is_escaped: bool) -> None:
    assert escape(cell) == ("'" + cell if is_escaped else cell)
    assert escaped_cells(np.array([cell, "x"], dtype=object)).tolist() == [escape(cell), "x"]


@pytest.mark.parametrize("quote_all", [False, True])
def test_every_output_path_escapes_alike(quote_all: bool) -> None:
    cells = [cell for cell, _ in ESCAPES]
    rows = [[cell, cell] for cell in cells]
    lines = ["a,b"] + [",".join(f'"{cell}"' if quote_all else cell for cell in row) for row in rows]
    content = ("\n".join(lines) + "\n").encode()
    added = {"prediction": np.array(cells, dtype=object)}

    (chunk,) = read_csv_chunks(io.BytesIO(content), 1_000)

    frame = chunk.frame.assign(prediction=added["prediction"])
    assert chunk.to_csv(added, header=True) == csv_bytes(frame, header=True)


def test_csv_bytes_quotes_line_breaks_and_uses_crlf() -> None:
    frame = pd.DataFrame({"a": ["x\ny", "z\rw"], "b": [1, 2]})

    assert csv_bytes(frame, header=True) == b'a,b\r\n"x\ny",1\r\n"z\rw",2\r\n'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(True, b'\'=cmd,b\r\nx,"say ""hi"", then"\r\n', id="header"),
        pytest.param(False, b'x,"say ""hi"", then"\r\n', id="no-header"),
    ],
)
def test_csv_bytes_escapes_header_names_and_can_omit_the_header(
    header: bool, expected: bytes
) -> None:
    frame = pd.DataFrame({"=cmd": ["x"], "b": ['say "hi", then']})

    assert csv_bytes(frame, header=header) == expected


def test_csv_bytes_is_utf8_and_leaves_the_frame_unchanged() -> None:
    frame = pd.DataFrame({"name": ["café", "-x"]}, dtype=object)

    assert csv_bytes(frame, header=False) == "café\r\n'-x\r\n".encode()
    assert frame["name"].tolist() == ["café", "-x"]


# ---------------------------------------------------------------------------------------------
# the chunk writers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 3, 100])
def test_chunk_output_is_csv_bytes_of_the_frame_with_the_added_columns(
    chunk_rows: int, header: bool
) -> None:
    content = csv_from_rows(MIXED_CELLS, quote_all=False)

    for chunk in read_csv_chunks(io.BytesIO(content), chunk_rows):
        count = len(chunk)
        added = {
            "prediction": np.array(["=p", "-1", "a,b", 'q"'] * count, dtype=object)[:count],
            "code": np.arange(count) - 1,
            "probability_x": np.array([0.25, float("nan"), -1e-7, 1e16] * count)[:count],
        }
        frame = chunk.frame.copy()
        for name, values in added.items():
            frame[name] = values
        assert chunk.to_csv(added, header=header) == csv_bytes(frame, header=header)
