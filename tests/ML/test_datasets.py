"""Tests for ML/datasets.py: reading and checking CSVs, JSON prediction input, CSV output."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ML import datasets
from ML.datasets import (
    MAX_DETAILS,
    DatasetLimits,
    Feature,
    FeatureKind,
    csv_bytes,
    features_from_text_frame,
    frame_from_columns,
    frame_from_rows,
    iter_csv_chunks,
    read_csv_chunks,
    read_evaluation_csv,
    read_labelled_csv,
)
from ML.errors import DatasetTooLarge, InvalidDataset, InvalidInput
from tests.ML.conftest import WriteCsv

NUMERIC = FeatureKind.NUMERIC
CATEGORICAL = FeatureKind.CATEGORICAL
SCHEMA = [
    Feature("size", NUMERIC, "float64"),
    Feature("color", CATEGORICAL, "str"),
    Feature("weight", NUMERIC, "int64"),
]


def read(content: bytes, target: str = "y", limits: DatasetLimits | None = None) -> Any:
    return read_labelled_csv(io.BytesIO(content), target, limits or DatasetLimits())


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


# ---------------------------------------------------------------------------------------------
# Feature
# ---------------------------------------------------------------------------------------------


def test_feature_round_trips_through_a_dict() -> None:
    feature = Feature("color", CATEGORICAL, "str")
    assert feature.to_dict() == {"name": "color", "kind": "categorical", "dtype": "str"}
    assert Feature.from_dict(feature.to_dict()) == feature


# ---------------------------------------------------------------------------------------------
# read_labelled_csv: what a good file gives
# ---------------------------------------------------------------------------------------------


def test_reads_features_in_csv_order_with_kinds_and_dtypes(mixed_csv: Path) -> None:
    dataset = read_labelled_csv(mixed_csv, "label", DatasetLimits())

    assert dataset.target_variable == "label"
    assert list(dataset.features.columns) == ["size", "color", "flag"]
    assert [(f.name, f.kind, f.dtype) for f in dataset.schema] == [
        ("size", NUMERIC, "float64"),
        ("color", CATEGORICAL, "str"),
        ("flag", CATEGORICAL, "bool"),
    ]
    assert len(dataset.features) == len(dataset.target) == 48
    assert set(dataset.target) == {"yes", "no"}


def test_categorical_cells_are_text_as_written_and_missing_is_nan() -> None:
    dataset = read(b"a,color,flag,y\n1,red,True,p\n2,,false,q\n3,NA,,q\n")

    assert dataset.features["color"].dtype == object
    assert dataset.features["color"].iloc[0] == "red"
    assert math.isnan(dataset.features["color"].iloc[1])
    assert math.isnan(dataset.features["color"].iloc[2])
    # pandas would read True/false as booleans; the categories must be the text, as predicted.
    assert dataset.features["flag"].iloc[:2].tolist() == ["True", "false"]
    assert math.isnan(dataset.features["flag"].iloc[2])


def test_bool_columns_are_categorical_and_int_columns_numeric() -> None:
    dataset = read(b"n,f,b,y\n1,1.5,True,p\n2,2.5,False,q\n")

    assert [(f.kind, f.dtype) for f in dataset.schema] == [
        (NUMERIC, "int64"),
        (NUMERIC, "float64"),
        (CATEGORICAL, "bool"),
    ]


def test_integer_labels_stay_integers() -> None:
    dataset = read(b"a,y\n1,0\n2,1\n3,2\n")

    assert dataset.target.dtype == np.int64
    assert dataset.target.tolist() == [0, 1, 2]


def test_reads_a_path_a_bom_crlf_and_skips_blank_lines(write_csv: WriteCsv) -> None:
    path = write_csv(b"\xef\xbb\xbfa,y\r\n\r\n1,p\r\n   \r\n2,q\r\n\r\n")

    dataset = read_labelled_csv(path, "y", DatasetLimits())

    assert dataset.features["a"].tolist() == [1, 2]
    assert dataset.target.tolist() == ["p", "q"]


def test_reads_a_stream_that_cannot_seek() -> None:
    stream = io.BufferedReader(Unseekable(b"a,y\n1,p\n2,q\n"))

    dataset = read_labelled_csv(stream, "y", DatasetLimits())

    assert dataset.target.tolist() == ["p", "q"]


def test_quoted_cells_may_hold_commas_quotes_and_newlines() -> None:
    dataset = read(b'a,note,y\n1,"x, ""y""\nz",p\n2,plain,q\n')

    assert dataset.features["note"].tolist() == ['x, "y"\nz', "plain"]


def test_missing_markers_match_pandas_defaults() -> None:
    parsers = pytest.importorskip("pandas._libs.parsers")
    assert set(parsers.STR_NA_VALUES) == datasets._MISSING_MARKERS


# ---------------------------------------------------------------------------------------------
# read_labelled_csv: every bad file is InvalidDataset with a message that says what to fix
# ---------------------------------------------------------------------------------------------

BAD_FILES = [
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
    pytest.param(b"a,b\n1,2\n", "column 'y' not found; the CSV has: a, b", id="no-target"),
    pytest.param(b"y\np\nq\n", "only the target column 'y'", id="no-feature"),
    pytest.param(
        b"a,y\n1,p\n2,\n3,q\n4,NA\n",
        "the target 'y' has 2 missing values, at data rows 2, 4",
        id="target-missing",
    ),
    pytest.param(
        b"a,y\n1,a\n2,a\n",
        "the target 'y' has a single class 'a'; a classifier needs at least two",
        id="single-class",
    ),
    pytest.param(b"a,y\n1,7\n2,7\n", "single class 7;", id="single-int-class"),
    pytest.param(b"a,b,y\n1,inf,p\n2,3,q\n", "column 'b' has infinite values", id="inf"),
    pytest.param(b"a,y\n-inf,p\n2,q\n", "column 'a' has infinite values", id="minus-inf"),
    pytest.param(b"a,y\n1e999,p\n2,q\n", "column 'a' has infinite values", id="overflow"),
    pytest.param(b"a,y\n1,0.5\n2,1.5\n", "holds fractional numbers (e.g. 0.5)", id="float-target"),
    pytest.param(b"a,b,y\n1,,p\n2,NA,q\n", "column 'b' is entirely empty", id="empty-column"),
    pytest.param(b'a,y\n1,"p\n2,q\n', "line 2 is not valid CSV", id="unclosed-quote"),
    pytest.param(b'a,y\n1,"p"x\n2,q\n', "line 2 is not valid CSV", id="text-after-quote"),
    pytest.param(b"a,y\n" + b"x" * 200_000 + b",p\n", "line 2 is not valid CSV", id="huge-cell"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_bad_files_are_invalid_datasets(content: bytes, message: str) -> None:
    with pytest.raises(InvalidDataset) as caught:
        read(content)
    assert message in caught.value.message


def test_more_classes_than_the_limit_is_invalid() -> None:
    with pytest.raises(InvalidDataset, match="3 distinct values, more than the limit of 2"):
        read(b"a,y\n1,p\n2,q\n3,r\n", limits=DatasetLimits(max_classes=2))


def test_more_rows_than_the_limit_is_too_large() -> None:
    with pytest.raises(DatasetTooLarge, match="more than 2 data rows"):
        read(b"a,y\n1,p\n2,q\n3,r\n", limits=DatasetLimits(max_rows=2))


def test_reading_stops_at_the_row_limit() -> None:
    # The ragged line lies past the limit: reading must stop before it.
    body = b"".join(b"%d,p\n" % index for index in range(10)) + b"1,2,3\n"
    with pytest.raises(DatasetTooLarge):
        read(b"a,y\n" + body, limits=DatasetLimits(max_rows=5))


def test_the_column_limit_is_checked_on_the_header_before_the_body() -> None:
    # The body is ragged: only the header may have been parsed.
    with pytest.raises(DatasetTooLarge, match="3 columns; the limit is 2"):
        read(b"a,b,y\n1\n", limits=DatasetLimits(max_columns=2))


# ---------------------------------------------------------------------------------------------
# read_evaluation_csv
# ---------------------------------------------------------------------------------------------


def test_evaluation_gives_schema_order_and_ignores_extra_columns() -> None:
    content = b"extra,weight,color,size,y\nz,3,red,1.5,p\nz,,NA, 2 ,q\nz,4,,NA,p\n"

    features, target = read_evaluation_csv(io.BytesIO(content), "y", SCHEMA, DatasetLimits())

    assert list(features.columns) == ["size", "color", "weight"]
    assert features["size"].dtype == np.float64
    assert features["weight"].dtype == np.float64
    assert features["color"].dtype == object
    assert features["size"].iloc[:2].tolist() == [1.5, 2.0]
    assert math.isnan(features["size"].iloc[2])
    assert features["color"].iloc[0] == "red"
    assert math.isnan(features["color"].iloc[1]) and math.isnan(features["color"].iloc[2])
    assert target.tolist() == ["p", "q", "p"]


def test_evaluation_allows_a_single_class() -> None:
    content = b"size,color,weight,y\n1,red,3,p\n"

    _, target = read_evaluation_csv(io.BytesIO(content), "y", SCHEMA, DatasetLimits())

    assert target.tolist() == ["p"]


def test_evaluation_names_missing_columns() -> None:
    with pytest.raises(InvalidDataset) as caught:
        read_evaluation_csv(io.BytesIO(b"size,y\n1,p\n"), "y", SCHEMA, DatasetLimits())
    assert "lacks columns the model needs: color, weight; the CSV has: size, y" in str(caught.value)
    assert [detail["field"] for detail in caught.value.details] == ["color", "weight"]


def test_evaluation_says_a_missing_target_is_the_one_the_request_named() -> None:
    with pytest.raises(InvalidDataset) as caught:
        read_evaluation_csv(io.BytesIO(b"size,z\n1,p\n"), "y", SCHEMA, DatasetLimits())
    assert caught.value.message == (
        "the CSV has no column 'y', the target_variable of this request; "
        "name the column that holds the labels; the CSV has: size, z"
    )
    assert caught.value.details == [{"field": "y", "error": "is missing"}]


def test_evaluation_rejects_text_in_a_numeric_feature() -> None:
    content = b"size,color,weight,y\n1,red,3,p\nbig,red,3,q\n3,red,x,q\n"

    with pytest.raises(InvalidDataset) as caught:
        read_evaluation_csv(io.BytesIO(content), "y", SCHEMA, DatasetLimits())

    assert "column 'size'" in caught.value.message
    assert "row 2" in caught.value.message
    assert "column 'weight'" in caught.value.message
    assert {
        "row": 2,
        "field": "size",
        "error": "must be a finite number or empty, got the string 'big'",
    } in caught.value.details


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b"size,color,weight\n1,r,2\n", "no column 'y', the target_variable", id="no-target"
        ),
        pytest.param(b"", "the CSV is empty", id="empty"),
        pytest.param(b"size,color,weight,y\n", "no data rows", id="header-only"),
        pytest.param(b"size,color,weight,y\n1,r,2\n", "line 2 has 3 fields", id="ragged"),
        pytest.param(b"size,color,weight,y\n1,r,2,\n", "1 missing value", id="target-missing"),
        pytest.param(b"size,size,color,weight,y\n", "repeats column names: size", id="dups"),
    ],
)
def test_evaluation_checks_the_file_like_training(content: bytes, message: str) -> None:
    with pytest.raises(InvalidDataset, match=message):
        read_evaluation_csv(io.BytesIO(content), "y", SCHEMA, DatasetLimits())


def test_evaluation_target_must_not_be_a_feature() -> None:
    with pytest.raises(InvalidDataset, match="'size' is a feature of this model"):
        read_evaluation_csv(
            io.BytesIO(b"size,color,weight\n1,r,2\n"), "size", SCHEMA, DatasetLimits()
        )


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


def test_chunks_when_rows_divide_evenly_and_when_one_chunk_holds_all() -> None:
    content = b"a\n" + b"".join(b"%d\n" % index for index in range(6))

    assert [len(c) for c in iter_csv_chunks(io.BytesIO(content), 3)] == [3, 3]
    assert [len(c) for c in iter_csv_chunks(io.BytesIO(content), 100)] == [6]


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

MIXED_CELLS = [
    ["1.5", "red", "3", "a, b"],
    ["", "NA", "-2", 'say "hi"'],
    ["-0.5", "", "1e3", "two\nlines"],
    ["NA", "blue", "007", "=1+2"],
    [" 2 ", "null", "", "café"],
    ["+4", "-1", "nan", "-1.5"],
    ["1e-3", "=x", "5", ""],
]


def csv_from_rows(rows: list[list[str]], *, quote_all: bool) -> bytes:
    def cell(text: str) -> str:
        needs = quote_all or any(character in text for character in ',"\r\n')
        return '"' + text.replace('"', '""') + '"' if needs else text

    lines = [
        ",".join(cell(text) for text in row) for row in [["size", "color", "weight", "note"], *rows]
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


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


@pytest.mark.parametrize("chunk_rows", [1, 3, 100])
def test_chunk_output_is_csv_bytes_of_the_frame_with_the_added_columns(chunk_rows: int) -> None:
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
        for header in (True, False):
            assert chunk.to_csv(added, header=header) == csv_bytes(frame, header=header)


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
# features_from_text_frame
# ---------------------------------------------------------------------------------------------


def text_frame(**columns: list[str]) -> pd.DataFrame:
    chunk = next(iter_csv_chunks(io.BytesIO(_csv(columns)), 1_000))
    return chunk


def _csv(columns: dict[str, list[str]]) -> bytes:
    names = list(columns)
    lines = [",".join(names)] + [",".join(row) for row in zip(*columns.values(), strict=True)]
    return ("\n".join(lines) + "\n").encode()


def test_text_frame_becomes_features_in_schema_order() -> None:
    frame = text_frame(
        label=["p", "q", "r", "s"],
        weight=["3", "", "NA", "-2"],
        color=["red", "", "null", "7"],
        size=["1.5", " 2 ", "1e3", "nan"],
    )

    features = features_from_text_frame(frame, SCHEMA, first_row_number=1)

    assert list(features.columns) == ["size", "color", "weight"]
    assert features["size"].dtype == np.float64 and features["weight"].dtype == np.float64
    assert features["color"].dtype == object
    assert features["size"].tolist()[:3] == [1.5, 2.0, 1000.0]
    assert math.isnan(features["size"].iloc[3])
    assert features["weight"].iloc[0] == 3.0 and features["weight"].iloc[3] == -2.0
    assert features["color"].iloc[0] == "red" and features["color"].iloc[3] == "7"
    assert math.isnan(features["color"].iloc[1]) and math.isnan(features["color"].iloc[2])


def test_text_frame_missing_features_are_named() -> None:
    frame = text_frame(size=["1"], other=["x"])

    with pytest.raises(InvalidInput) as caught:
        features_from_text_frame(frame, SCHEMA, first_row_number=1)

    assert caught.value.message == (
        "the CSV lacks features the model needs: color, weight; the CSV has: size, other"
    )
    assert caught.value.details == [
        {"field": "color", "error": "is missing"},
        {"field": "weight", "error": "is missing"},
    ]


def test_text_frame_bad_numbers_name_the_column_and_rows() -> None:
    frame = text_frame(
        size=["1", "one", "2", "inf", "x"], color=["r"] * 5, weight=["1", "2", "3", "4", "5"]
    )

    with pytest.raises(InvalidInput) as caught:
        features_from_text_frame(frame, SCHEMA, first_row_number=101)

    message = caught.value.message
    assert "column 'size'" in message
    assert "rows 102, 104, 105" in message
    assert "first: the string 'one'" in message
    assert [detail["row"] for detail in caught.value.details] == [102, 104, 105]


def test_text_frame_details_are_capped() -> None:
    frame = text_frame(size=["x"] * 150, color=["r"] * 150, weight=["1"] * 150)

    with pytest.raises(InvalidInput) as caught:
        features_from_text_frame(frame, SCHEMA, first_row_number=1)

    assert len(caught.value.details) == MAX_DETAILS
    assert "and 145 more" in caught.value.message


# ---------------------------------------------------------------------------------------------
# frame_from_rows / frame_from_columns
# ---------------------------------------------------------------------------------------------

NUMERIC_SCHEMA = [Feature(name, NUMERIC, "float64") for name in ("a", "b", "c", "d")]


def test_rows_of_numbers_become_a_float_frame_in_schema_order() -> None:
    frame = frame_from_rows([{"d": 4, "c": 3.5, "b": -2, "a": 1.0}], NUMERIC_SCHEMA)

    assert list(frame.columns) == ["a", "b", "c", "d"]
    assert all(frame[column].dtype == np.float64 for column in frame.columns)
    assert frame.iloc[0].tolist() == [1.0, -2.0, 3.5, 4.0]


def test_null_means_missing_for_any_feature() -> None:
    frame = frame_from_rows(
        [{"size": None, "color": None, "weight": 1}, {"size": 2, "color": "red", "weight": None}],
        SCHEMA,
    )

    assert math.isnan(frame["size"].iloc[0]) and math.isnan(frame["weight"].iloc[1])
    assert math.isnan(frame["color"].iloc[0])
    assert frame["color"].dtype == object


def test_categorical_features_accept_numbers_and_booleans_as_text() -> None:
    frame = frame_from_rows(
        [
            {"size": 1, "color": 7, "weight": 1},
            {"size": 1, "color": 1.5, "weight": 1},
            {"size": 1, "color": True, "weight": 1},
        ],
        SCHEMA,
    )

    assert frame["color"].tolist() == ["7", "1.5", "True"]


def test_every_bad_field_is_reported() -> None:
    rows: list[Any] = [
        {"size": "1.5", "color": ["red"], "extra": 1},
        {"size": True, "color": "red", "weight": float("nan")},
        {"size": float("inf"), "color": {"x": 1}, "weight": 10**400},
        "not a row",
    ]

    with pytest.raises(InvalidInput) as caught:
        frame_from_rows(rows, SCHEMA)

    details = caught.value.details
    assert {"row": 0, "field": "weight", "error": "is missing"} in details
    assert {"row": 0, "field": "extra", "error": "is not a feature of this model"} in details
    assert {
        "row": 3,
        "error": "must be an object of feature values, got the string 'not a row'",
    } in details
    assert {
        "row": 0,
        "field": "size",
        "error": "must be a number or null, got the string '1.5'",
    } in details
    assert {"row": 1, "field": "size", "error": "must be a number or null, got true"} in details
    assert {
        "row": 2,
        "field": "size",
        "error": "must be a finite number or null, got inf",
    } in details
    assert {
        "row": 1,
        "field": "weight",
        "error": "must be a finite number or null, got nan",
    } in details
    assert {"row": 2, "field": "weight", "error": "is too large for a 64-bit float"} in details
    assert {
        "row": 0,
        "field": "color",
        "error": "must be a string, number or null, got a list",
    } in details
    assert {
        "row": 2,
        "field": "color",
        "error": "must be a string, number or null, got an object",
    } in details
    assert len(details) == 10
    message = caught.value.message
    assert message.startswith("10 problems in the input: row 0 field 'weight' is missing; ")
    assert "and 5 more" in message
    assert (
        "the model's features are: size (numeric), color (categorical), weight (numeric)" in message
    )


def test_one_problem_reads_naturally() -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_from_rows([{"a": 1, "b": 2, "c": 3}], NUMERIC_SCHEMA)

    assert caught.value.message.startswith("1 problem in the input: row 0 field 'd' is missing")


def test_details_are_capped_at_100() -> None:
    rows = [{"a": "x", "b": 1, "c": 1, "d": 1}] * 150

    with pytest.raises(InvalidInput) as caught:
        frame_from_rows(rows, NUMERIC_SCHEMA)

    assert len(caught.value.details) == MAX_DETAILS
    assert caught.value.message.startswith("150 problems in the input")


@pytest.mark.parametrize("rows", [[], "rows", {"a": 1}])
def test_rows_must_be_a_non_empty_list(rows: Any) -> None:
    with pytest.raises(InvalidInput, match="rows"):
        frame_from_rows(rows, NUMERIC_SCHEMA)


def test_empty_rows_message() -> None:
    with pytest.raises(InvalidInput, match="rows is empty"):
        frame_from_rows([], NUMERIC_SCHEMA)


def test_columns_become_the_same_frame_as_rows() -> None:
    rows: list[dict[str, Any]] = [
        {"size": 1, "color": "red", "weight": 2},
        {"size": None, "color": 3, "weight": 4.5},
    ]
    columns: dict[str, list[Any]] = {"weight": [2, 4.5], "size": [1, None], "color": ["red", 3]}

    pd.testing.assert_frame_equal(
        frame_from_columns(columns, SCHEMA), frame_from_rows(rows, SCHEMA)
    )


def test_columns_problems_name_each_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_from_columns({"size": "1", "color": ["r"], "extra": [1]}, SCHEMA)

    assert caught.value.details == [
        {"field": "weight", "error": "is missing"},
        {"field": "extra", "error": "is not a feature of this model"},
        {"field": "size", "error": "must be a list of values, got the string '1'"},
    ]


def test_columns_values_are_checked_with_their_row() -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_from_columns({"size": [1, "2"], "color": ["r", []], "weight": [1, 2]}, SCHEMA)

    assert caught.value.details == [
        {"row": 1, "field": "size", "error": "must be a number or null, got the string '2'"},
        {"row": 1, "field": "color", "error": "must be a string, number or null, got a list"},
    ]


def test_columns_of_unequal_length_are_invalid() -> None:
    with pytest.raises(InvalidInput) as caught:
        frame_from_columns({"size": [1, 2], "color": ["r"], "weight": [1, 2, 3]}, SCHEMA)

    assert [detail["field"] for detail in caught.value.details] == ["color", "weight"]
    assert "has 1 values but 'size' has 2" in caught.value.message


def test_empty_columns_are_invalid() -> None:
    with pytest.raises(InvalidInput, match="columns are empty"):
        frame_from_columns({"size": [], "color": [], "weight": []}, SCHEMA)


def test_frames_built_without_the_internal_constructor_are_equal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows: list[dict[str, Any]] = [
        {"size": 1, "color": "red", "weight": 2},
        {"size": None, "color": None, "weight": 4},
    ]
    fast = frame_from_rows(rows, SCHEMA)
    monkeypatch.setattr(datasets, "_FROM_ARRAYS", None)

    portable = frame_from_rows(rows, SCHEMA)

    pd.testing.assert_frame_equal(fast, portable)
    assert portable["color"].dtype == object


# ---------------------------------------------------------------------------------------------
# csv_bytes
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


def test_csv_bytes_escapes_text_but_not_plain_numbers() -> None:
    frame = pd.DataFrame({"cell": [cell for cell, _ in ESCAPES]}, dtype=object)

    rows = list(csv.reader(io.StringIO(csv_bytes(frame, header=False).decode(), newline="")))

    assert [row[0] for row in rows] == [
        "'" + cell if is_escaped else cell for cell, is_escaped in ESCAPES
    ]


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


def test_csv_bytes_escapes_header_names_and_can_omit_the_header() -> None:
    frame = pd.DataFrame({"=cmd": ["x"], "b": ['say "hi", then']})

    assert csv_bytes(frame, header=True) == b'\'=cmd,b\r\nx,"say ""hi"", then"\r\n'
    assert csv_bytes(frame, header=False) == b'x,"say ""hi"", then"\r\n'


def test_csv_bytes_is_utf8_and_leaves_the_frame_unchanged() -> None:
    frame = pd.DataFrame({"name": ["café", "-x"]}, dtype=object)

    assert csv_bytes(frame, header=False) == "café\r\n'-x\r\n".encode()
    assert frame["name"].tolist() == ["café", "-x"]
