"""Tests for ML/csv_reader.py: line ends, BOM, blank lines, quoting, line numbers in errors."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest

from ML.csv_chunks import read_csv_chunks
from ML.csv_reader import CsvReader, ParsedRecords, PlainLines
from ML.datasets import DatasetLimits, check_training_csv_start, read_labelled_csv
from ML.errors import DatasetTooLarge, InvalidDataset
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


# ---------------------------------------------------------------------------------------------
# CsvReader: one reader behind training, the train request's early check and CSV prediction
# ---------------------------------------------------------------------------------------------


def test_unquoted_lines_come_as_plain_lines_and_quoted_records_as_parsed_cells() -> None:
    plain = CsvReader(io.BytesIO(b"a,b\r\n1,2\r\n3,4\r\n"))
    quoted = CsvReader(io.BytesIO(b'a,b\n"1",2\n3,"x\ny"\n'))

    assert plain.header == quoted.header == ["a", "b"]
    assert list(plain.batches(10)) == [PlainLines(b"1,2\n3,4\n", 2)]
    assert list(quoted.batches(10)) == [ParsedRecords(["1", "2", "3", "x\ny"], 2)]


def test_batches_hold_at_most_the_asked_records() -> None:
    reader = CsvReader(io.BytesIO(b"a\n" + b"".join(b"%d\n" % index for index in range(5))))

    assert [records.rows for records in reader.batches(2)] == [2, 2, 1]


def test_the_column_limit_is_checked_before_the_names() -> None:
    with pytest.raises(DatasetTooLarge, match="3 columns; the limit is 2"):
        CsvReader(io.BytesIO(b"a,a,a\n1,2,3\n"), max_columns=2)


# Problems of shape, found by the reader whichever path reads the file (each file has a
# target column y): training, the train request's early check, and CSV prediction.
SHAPE_PROBLEMS = [
    pytest.param(b"", "the CSV is empty", id="empty"),
    pytest.param(b"\n\n  \n", "the CSV is empty", id="blank-lines-only"),
    pytest.param(b"\xef\xbb\xbf", "the CSV is empty", id="bom-only"),
    pytest.param(b"a,y\n", "no data rows", id="header-only"),
    pytest.param(b"a,y\n1,\x00p\n", "binary", id="nul-byte"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary", id="png"),
    pytest.param(b"a,y\n1,caf\xe9\n", "not UTF-8", id="latin-1"),
    pytest.param("a,y\n1,p\n".encode("utf-16"), "the CSV is UTF-16 text", id="utf-16"),
    pytest.param(b"a,y\n1,p\n2\n", "line 3 has 1 field but the header has 2", id="short-row"),
    pytest.param(b"a,y\n1,p\n2,q,r\n", "line 3 has 3 fields but the header has 2", id="long-row"),
    pytest.param(b"a,y\n1,p,x\n2,q\n", "line 2 has 3 fields", id="long-first-row"),
    pytest.param(b"a,b,a,b,y\n1,2,3,4,p\n", "repeats column names: a, b", id="duplicated-names"),
    pytest.param(b"a,,y\n1,2,p\n", "no name for column 2", id="empty-name"),
    pytest.param(b",a,y\n0,1,p\n", "no name for column 1", id="index-column"),
    pytest.param(b'a,y\n1,"p\n2,q\n', "line 2 is not valid CSV", id="unclosed-quote"),
    pytest.param(b'a,y\n1,"p"x\n2,q\n', "line 2 is not valid CSV", id="text-after-quote"),
    pytest.param(b"a,y\n" + b"x" * 200_000 + b",p\n", "line 2 is not valid CSV", id="huge-cell"),
    pytest.param(b"a,y\r\n1,p\r\n2,q,r\r\n", "line 3 has 3 fields", id="long-row-crlf"),
    pytest.param(b'a,y\n1,"p\nq"\n2\n', "line 4 has 1 field", id="short-row-after-a-line-break"),
]


def _problem(read: Callable[[bytes], object], content: bytes) -> str:
    with pytest.raises(InvalidDataset) as caught:
        read(content)
    return caught.value.message


@pytest.mark.parametrize(("content", "message"), SHAPE_PROBLEMS)
def test_bad_files_are_invalid_datasets(content: bytes, message: str) -> None:
    limits = DatasetLimits()
    training = _problem(lambda data: read_labelled_csv(io.BytesIO(data), "y", limits), content)
    early = _problem(lambda data: check_training_csv_start(io.BytesIO(data), "y", limits), content)
    prediction = _problem(lambda data: list(read_csv_chunks(io.BytesIO(data), 2)), content)

    assert message in training
    assert training == early == prediction
