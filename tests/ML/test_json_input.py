"""Tests for ML/json_input.py: JSON rows and columns checked and turned into feature frames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ML import frames
from ML.errors import InvalidInput
from ML.features import Feature
from ML.json_input import frame_from_columns, frame_from_rows
from ML.messages import MAX_DETAILS
from tests.ML.csv_cases import NUMERIC, SCHEMA

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
    monkeypatch.setattr(frames, "_FROM_ARRAYS", None)

    portable = frame_from_rows(rows, SCHEMA)

    pd.testing.assert_frame_equal(fast, portable)
    assert portable["color"].dtype == object
