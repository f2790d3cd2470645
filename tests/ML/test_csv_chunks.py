"""Tests for ML/csv_chunks.py: a CSV streamed in chunks, as text frames and feature frames."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ML.csv_chunks import read_csv_chunks
from ML.errors import InvalidDataset, InvalidInput
from ML.features import features_from_text_frame
from tests.ML.csv_cases import MIXED_CELLS, SCHEMA, csv_from_rows, iter_csv_chunks
from tests.ML.samples import WriteCsv

# ---------------------------------------------------------------------------------------------
# iter_csv_chunks
# ---------------------------------------------------------------------------------------------


def test_chunks_have_at_most_chunk_rows_and_keep_text_as_written() -> None:
    rows = [b"007,,NA", b" x ,=1+2,-1"] + [b"%d,a,b" % index for index in range(8)]
    source = io.BytesIO(b"a,b,c\n" + b"\n".join(rows) + b"\n")

    chunks = list(iter_csv_chunks(source, 3))

    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 1]
    assert [chunk.index[0] for chunk in chunks] == [0, 3, 6, 9]
    first = chunks[0]
    assert list(first.columns) == ["a", "b", "c"]
    assert first.iloc[0].tolist() == ["007", "", "NA"]
    assert first.iloc[1].tolist() == [" x ", "=1+2", "-1"]
    assert all(first[column].dtype == object for column in first.columns)


@pytest.mark.parametrize(
    ("chunk_rows", "sizes"),
    [pytest.param(3, [3, 3], id="rows-divide-evenly"), pytest.param(100, [6], id="one-chunk")],
)
def test_chunks_when_rows_divide_evenly_and_when_one_chunk_holds_all(
    chunk_rows: int, sizes: list[int]
) -> None:
    content = b"a\n" + b"".join(b"%d\n" % index for index in range(6))

    assert [len(c) for c in iter_csv_chunks(io.BytesIO(content), chunk_rows)] == sizes


def test_chunks_stream_many_rows() -> None:
    rows = 25_001
    content = b"a,b\n" + b"".join(b"%d,x\n" % index for index in range(rows))

    sizes = [len(chunk) for chunk in iter_csv_chunks(io.BytesIO(content), 5_000)]

    assert sizes == [5_000] * 5 + [1]


def test_chunks_read_a_path(write_csv: WriteCsv) -> None:
    path = write_csv("a,b\n1,2\n")

    chunks = list(iter_csv_chunks(path, 10))  # type: ignore[arg-type]

    assert chunks[0].iloc[0].tolist() == ["1", "2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "the CSV is empty", id="empty"),
        pytest.param(b"a,b\n", "no data rows", id="header-only"),
        pytest.param(b"a,a\n1,2\n", "repeats column names: a", id="duplicated"),
        pytest.param(b"a,b\n\x001,2\n", "binary", id="binary"),
        pytest.param(b"a,b\n1,\xff\n", "not UTF-8", id="encoding"),
    ],
)
def test_chunks_reject_bad_files(content: bytes, message: str) -> None:
    with pytest.raises(InvalidDataset, match=message):
        list(iter_csv_chunks(io.BytesIO(content), 10))


def test_a_ragged_row_further_down_fails_when_the_stream_reaches_it() -> None:
    content = b"a,b\n" + b"1,2\n" * 4 + b"3\n"
    chunks = iter_csv_chunks(io.BytesIO(content), 2)

    assert len(next(chunks)) == 2
    assert len(next(chunks)) == 2
    with pytest.raises(InvalidDataset, match="line 6 has 1 field"):
        next(chunks)


def test_chunk_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        list(iter_csv_chunks(io.BytesIO(b"a\n1\n"), 0))


# ---------------------------------------------------------------------------------------------
# read_csv_chunks
# ---------------------------------------------------------------------------------------------


def chunk_results(content: bytes, chunk_rows: int) -> list[tuple[Any, ...]]:
    results = []
    for chunk in read_csv_chunks(io.BytesIO(content), chunk_rows):
        count = len(chunk)
        added = {
            "prediction": np.array(["=p", "-1", "a,b", "é"] * count, dtype=object)[:count],
            "probability_x": np.array([0.25, float("nan"), -1e-7] * count)[:count],
        }
        results.append(
            (
                chunk.first_row,
                chunk.frame.to_numpy().tolist(),
                repr(chunk.features(SCHEMA).to_numpy().tolist()),
                chunk.to_csv(added, header=chunk.first_row == 1),
            )
        )
    return results


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 100])
def test_quoted_and_unquoted_files_read_and_write_alike(chunk_rows: int) -> None:
    # Quoting every cell sends every record through the csv module; a record without quotes
    # takes the fast path: both must give the same frames, features and output.
    plain_rows = [row for row in MIXED_CELLS if '"' not in row[3] and "\n" not in row[3]]

    quoted = chunk_results(csv_from_rows(plain_rows, quote_all=True), chunk_rows)
    unquoted = chunk_results(csv_from_rows(plain_rows, quote_all=False), chunk_rows)

    assert quoted == unquoted


def test_chunk_features_equal_features_from_the_frame() -> None:
    content = csv_from_rows(MIXED_CELLS, quote_all=False)

    for chunk in read_csv_chunks(io.BytesIO(content), 2):
        expected = features_from_text_frame(chunk.frame, SCHEMA, first_row_number=chunk.first_row)
        pd.testing.assert_frame_equal(chunk.features(SCHEMA), expected)


def test_chunk_features_report_bad_cells_like_the_frame() -> None:
    rows = [["1", "r", "2", "x"]] * 5 + [["one", "r", "inf", "x"]]
    content = csv_from_rows(rows, quote_all=False)

    *_, last = read_csv_chunks(io.BytesIO(content), 4)
    with pytest.raises(InvalidInput) as caught:
        last.features(SCHEMA)
    with pytest.raises(InvalidInput) as expected:
        features_from_text_frame(last.frame, SCHEMA, first_row_number=5)

    assert (caught.value.message, caught.value.details) == (
        expected.value.message,
        expected.value.details,
    )
    assert [detail["row"] for detail in caught.value.details] == [6, 6]
