"""Tests for ML/fitted_predictions.py: one pass gives the pipeline's own predict and
predict_proba, bit for bit, for every registered estimator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ML.datasets import Dataset
from ML.estimators import ESTIMATORS
from ML.fitted_predictions import labels_and_probabilities
from ML.training import build_pipeline


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def assert_same_as_the_pipeline(pipeline: Pipeline, dataset: Dataset) -> None:
    labels, probabilities = labels_and_probabilities(pipeline, dataset.features)

    expected = pipeline.predict(dataset.features)
    assert labels.dtype == expected.dtype
    np.testing.assert_array_equal(labels, expected)
    assert probabilities is not None
    expected_probabilities = pipeline.predict_proba(dataset.features)
    assert probabilities.dtype == expected_probabilities.dtype
    assert probabilities.tobytes() == expected_probabilities.tobytes()


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_multiclass_as_predict_and_predict_proba(estimator: str, iris: Dataset) -> None:
    pipeline = build_pipeline(iris.schema, estimator, {})
    pipeline.fit(iris.features, iris.target)

    assert_same_as_the_pipeline(pipeline, iris)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_binary_with_categories_as_predict_and_predict_proba(
    estimator: str, mixed_dataset: Dataset
) -> None:
    pipeline = build_pipeline(mixed_dataset.schema, estimator, {})
    pipeline.fit(mixed_dataset.features, mixed_dataset.target)

    assert_same_as_the_pipeline(pipeline, mixed_dataset)


def test_hist_gradient_boosting_with_a_weak_fit(iris: Dataset) -> None:
    # Few shallow trees: close scores, where rounded probabilities could tie.
    params = {"max_iter": 2, "max_depth": 2, "learning_rate": 0.01}
    pipeline = build_pipeline(iris.schema, "hist_gradient_boosting", params)
    pipeline.fit(iris.features, iris.target)

    assert_same_as_the_pipeline(pipeline, iris)


def test_no_probabilities_without_predict_proba(iris: Dataset) -> None:
    pipeline = Pipeline([("scale", StandardScaler()), ("classifier", RidgeClassifier())])
    pipeline.fit(iris.features, iris.target)

    labels, probabilities = labels_and_probabilities(pipeline, iris.features)

    np.testing.assert_array_equal(labels, pipeline.predict(iris.features))
    assert probabilities is None
