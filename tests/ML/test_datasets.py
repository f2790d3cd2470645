"""Tests for ML/datasets.py: reading and checking training and evaluation CSVs."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ML.datasets import (
    DatasetLimits,
    check_training_csv_start,
    read_evaluation_csv,
    read_labelled_csv,
)
from ML.errors import DatasetTooLarge, InvalidDataset
from tests.ML.csv_cases import CATEGORICAL, NUMERIC, SCHEMA, Unseekable
from tests.ML.samples import WriteCsv


def read(content: bytes, target: str = "y", limits: DatasetLimits | None = None) -> Any:
    return read_labelled_csv(io.BytesIO(content), target, limits or DatasetLimits())


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
    # Each categorical feature records its categories as written, missing cells left out.
    assert [f.categories for f in dataset.schema] == [None, ("red",), ("True", "false")]


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


# ---------------------------------------------------------------------------------------------
# read_labelled_csv: every bad file is InvalidDataset with a message that says what to fix
# ---------------------------------------------------------------------------------------------

BAD_FILES = [
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
# check_training_csv_start
# ---------------------------------------------------------------------------------------------


def test_the_early_check_reads_the_first_rows_and_rewinds() -> None:
    # A ragged row far down is the job's to find: the early check reads the first rows only.
    content = b"a,y\n" + b"1,p\n" * 5_000 + b"1,2,3\n"
    source = io.BytesIO(content)
    source.seek(0)

    check_training_csv_start(source, "y", DatasetLimits())

    assert source.tell() == 0
    with pytest.raises(InvalidDataset, match="line 5002 has 3 fields"):
        read(content)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"a,b\n1,2\n", "column 'y' not found; the CSV has: a, b", id="no-target"),
        pytest.param(b"y\np\n", "only the target column 'y'", id="no-feature"),
        pytest.param(b"a,y\n1,p\n2\n", "line 3 has 1 field", id="ragged"),
    ],
)
def test_the_early_check_refuses_what_training_refuses(content: bytes, message: str) -> None:
    with pytest.raises(InvalidDataset, match=message):
        check_training_csv_start(io.BytesIO(content), "y", DatasetLimits())
    with pytest.raises(InvalidDataset, match=message):
        read(content)


def test_the_early_check_applies_the_column_limit() -> None:
    with pytest.raises(DatasetTooLarge, match="3 columns; the limit is 2"):
        check_training_csv_start(io.BytesIO(b"a,b,y\n1,2,p\n"), "y", DatasetLimits(max_columns=2))


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
