"""Tests for ML/features.py: the Feature record and feature frames from CSV text cells."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from ML import features as features_module
from ML.errors import InvalidInput
from ML.features import (
    MAX_RECORDED_CATEGORIES,
    Feature,
    features_from_text_frame,
    recorded_categories,
)
from ML.messages import MAX_DETAILS
from tests.ML.csv_cases import CATEGORICAL, SCHEMA, iter_csv_chunks


def test_feature_round_trips_through_a_dict() -> None:
    feature = Feature("color", CATEGORICAL, "str")
    assert feature.to_dict() == {"name": "color", "kind": "categorical", "dtype": "str"}
    assert Feature.from_dict(feature.to_dict()) == feature
    assert Feature.from_dict(feature.to_dict()).categories is None


def test_categories_round_trip_and_leave_equality_alone() -> None:
    feature = Feature("color", CATEGORICAL, "str", categories=("blue", "red"))
    data = feature.to_dict()
    assert data["categories"] == ["blue", "red"]
    assert Feature.from_dict(data).categories == ("blue", "red")
    # The input checks' layout cache keys on name, kind and dtype alone.
    assert feature == Feature("color", CATEGORICAL, "str")
    assert hash(feature) == hash(Feature("color", CATEGORICAL, "str"))


def test_recorded_categories_are_the_distinct_text_sorted_up_to_a_cap() -> None:
    cells = pd.Series(["red", np.nan, "blue", "red", "<script>"], dtype=object)
    assert recorded_categories(cells) == ("<script>", "blue", "red")
    many = pd.Series([f"id-{i}" for i in range(MAX_RECORDED_CATEGORIES + 1)], dtype=object)
    assert recorded_categories(many) is None
    assert recorded_categories(many[:MAX_RECORDED_CATEGORIES]) is not None


def test_missing_markers_match_pandas_defaults() -> None:
    parsers = pytest.importorskip("pandas._libs.parsers")
    assert set(parsers.STR_NA_VALUES) == features_module.MISSING_MARKERS


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
