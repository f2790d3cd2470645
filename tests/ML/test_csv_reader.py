"""Tests for ML/csv_reader.py: line ends, BOM, blank lines, quoting, line numbers in errors."""

from __future__ import annotations

import csv
import io

import pytest

from ML.csv_chunks import read_csv_chunks
from ML.errors import InvalidDataset
from tests.ML.csv_cases import Unseekable, iter_csv_chunks


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"a,b\n1,2\n3,4\n", id="lf"),
        pytest.param(b"a,b\r\n1,2\r\n3,4", id="crlf-no-last-line-end"),
        pytest.param(b"a,b\r1,2\r3,4\r", id="cr"),
        pytest.param(b"\xef\xbb\xbfa,b\n1,2\n3,4\n", id="bom"),
        pytest.param(b"\na,b\n\n1,2\n  \n\r\n3,4\n\n", id="blank-lines"),
        pytest.param(b'"a","b"\n"1",2\n3,"4"\n', id="quoted"),
    ],
)
def test_chunks_read_line_ends_bom_blank_lines_and_quotes(content: bytes) -> None:
    frames = list(iter_csv_chunks(io.BytesIO(content), 1))

    assert [frame.to_numpy().tolist() for frame in frames] == [[["1", "2"]], [["3", "4"]]]
    assert [list(frame.index) for frame in frames] == [[0], [1]]


def test_a_ragged_row_after_multiline_records_names_its_physical_line() -> None:
    rows = [b"1,2"] * 4 + [b'"x\ny",2', b'"x\r\ny",3'] + [b"5,6"] * 4 + [b"7"]
    content = b"a,b\r\n" + b"\r\n".join(rows) + b"\r\n"

    with pytest.raises(InvalidDataset, match="line 14 has 1 field but the header has 2"):
        list(iter_csv_chunks(io.BytesIO(content), 2))


def test_a_field_over_the_csv_field_size_limit_is_refused() -> None:
    content = b"a,b\n1," + b"x" * (csv.field_size_limit() + 1) + b"\n"

    with pytest.raises(InvalidDataset, match=r"line 2 is not valid CSV \(field larger"):
        list(iter_csv_chunks(io.BytesIO(content), 10))


def test_chunks_of_a_file_read_a_few_bytes_at_a_time() -> None:
    content = b"a,b\r\n" + b"".join(b'%d,"x\r\n%d"\r\n' % (i, i) for i in range(5))

    chunks = list(read_csv_chunks(Unseekable(content), 2))  # type: ignore[arg-type]

    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert chunks[2].frame.to_numpy().tolist() == [["4", "x\r\n4"]]
