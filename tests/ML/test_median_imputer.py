"""Tests for ML/median_imputer.py: medians by partition give scikit-learn's fitted imputer, bit
for bit, and a pipeline that pickles as one fitted by scikit-learn alone."""

from __future__ import annotations

import io
import pickle
import warnings

import numpy as np
import pytest
from sklearn.impute import SimpleImputer

from ML.datasets import Dataset, DatasetLimits, read_labelled_csv
from ML.median_imputer import _PartitionMedianImputer, medians_by_partition
from ML.training import PREPROCESS_STEP, build_pipeline
from tests.ML.samples import COLORS


def sklearn_and_partition(X: np.ndarray) -> tuple[SimpleImputer, SimpleImputer]:
    """Both fitted; the warnings they raise (training records them) are the same."""
    with warnings.catch_warnings(record=True) as expected_warnings:
        warnings.simplefilter("always")
        expected = SimpleImputer(strategy="median").fit(X)
    with warnings.catch_warnings(record=True) as fitted_warnings:
        warnings.simplefilter("always")
        fitted = _PartitionMedianImputer(strategy="median").fit(X)
    fitted.__class__ = SimpleImputer
    assert [str(w.message) for w in fitted_warnings] == [str(w.message) for w in expected_warnings]
    return expected, fitted


# Cells chosen for the cases a partition could get wrong: signed zeros in the middle, missing
# cells, values whose sum overflows (the largest float), ties, and both parities of the rows.
TRICKY_CELLS = (0.0, -0.0, 1.0, -1.5, 2.25, np.nan, np.inf, -np.inf, 3.0)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_statistics_and_pickle_are_sklearns(seed: int, dtype: type) -> None:
    generator = np.random.default_rng(seed)
    shape = (int(generator.integers(1, 50)), int(generator.integers(1, 6)))
    X: np.ndarray
    if seed % 2:
        X = generator.choice(TRICKY_CELLS, size=shape).astype(dtype)
        X[np.isinf(X)] = np.copysign(np.finfo(dtype).max, X[np.isinf(X)])
        X[:, 0] = np.where(np.isnan(X[:, 0]), 1.0, X[:, 0])  # not all missing (sklearn drops it)
    else:
        X = generator.normal(size=shape).round(int(generator.integers(0, 3))).astype(dtype)

    expected, fitted = sklearn_and_partition(X)

    assert fitted.statistics_.dtype == expected.statistics_.dtype
    np.testing.assert_array_equal(np.signbit(fitted.statistics_), np.signbit(expected.statistics_))
    assert pickle.dumps(fitted) == pickle.dumps(expected)
    np.testing.assert_array_equal(fitted.transform(X), expected.transform(X))


@pytest.mark.parametrize("rows", [10_000, 10_001])
def test_many_rows_with_ties(rows: int) -> None:
    # Partition and sort take different paths over many equal values; the medians agree.
    generator = np.random.default_rng(rows)
    X = generator.normal(loc=0.3, size=(rows, 8)).round(1)

    expected, fitted = sklearn_and_partition(X)

    assert pickle.dumps(fitted) == pickle.dumps(expected)


def test_a_zero_median_keeps_sklearns_sign() -> None:
    # Both zeros sit in the middle: which one a sort puts there is sklearn's call.
    X = np.array([[-0.0], [0.0], [-0.0], [0.0], [5.0], [-5.0]])

    expected, fitted = sklearn_and_partition(X)

    assert pickle.dumps(fitted) == pickle.dumps(expected)


def test_an_odd_count_of_huge_values_overflows_as_sklearn_does() -> None:
    # np.ma.median adds the middle value to itself before halving it: inf, not 1e308, and
    # numpy's overflow warning.
    X = np.array([[1e308], [1e308], [-1.0]])

    expected, fitted = sklearn_and_partition(X)

    assert fitted.statistics_[0] == expected.statistics_[0] == np.inf
    assert pickle.dumps(fitted) == pickle.dumps(expected)


def test_other_strategies_and_indicators_are_sklearns_own() -> None:
    X = np.array([[1.0, np.nan], [2.0, 4.0], [7.0, 4.0]])
    for options in ({"strategy": "mean"}, {"strategy": "median", "add_indicator": True}):
        expected = SimpleImputer(**options).fit(X)
        fitted = _PartitionMedianImputer(**options).fit(X)
        fitted.__class__ = SimpleImputer
        assert pickle.dumps(fitted) == pickle.dumps(expected)


def labelled_csv(rows: int) -> Dataset:
    """Numeric columns with and without missing cells, one whose median is zero, a category."""
    generator = np.random.default_rng(7)
    lines = ["full,zero,holes,color,y"]
    for index in range(rows):
        full = round(float(generator.normal()), 3)
        zero = [-1, 0, 0, 2][index % 4]
        holes = "" if index % 9 == 4 else str(index % 5)
        label = "yes" if full > 0 or index % 3 == 0 else "no"
        lines.append(f"{full},{zero},{holes},{COLORS[index % 3]},{label}")
    content = "\n".join(lines) + "\n"
    return read_labelled_csv(io.BytesIO(content.encode()), "y", DatasetLimits())


@pytest.mark.parametrize(
    "estimator", ["logistic_regression", "hist_gradient_boosting", "random_forest"]
)
def test_a_fitted_pipeline_pickles_as_sklearns(estimator: str) -> None:
    dataset = labelled_csv(301)
    expected = build_pipeline(dataset.schema, estimator, {"random_state": 0})
    expected.fit(dataset.features, dataset.target)
    pipeline = build_pipeline(dataset.schema, estimator, {"random_state": 0})

    with medians_by_partition(pipeline):
        pipeline.fit(dataset.features, dataset.target)

    assert pickle.dumps(pipeline) == pickle.dumps(expected)
    imputer = pipeline[PREPROCESS_STEP].named_transformers_["numeric"]["impute"]
    assert type(imputer) is SimpleImputer
    assert type(pipeline[PREPROCESS_STEP].transformers[0][1]["impute"]) is SimpleImputer
