"""Tests for ML/boosting_inference.py, and for every registry estimator behind CompiledPipeline:
the same labels and probabilities as scikit-learn, bit for bit, or None."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from threadpoolctl import threadpool_limits

from ML.boosting_inference import CompiledGradientBoosting, CompiledHistGradientBoosting
from ML.datasets import Dataset, DatasetLimits, read_labelled_csv
from ML.estimators import ESTIMATORS
from ML.forest_inference import CompiledForest, CompiledPipeline
from ML.linear_inference import CompiledGaussianNB, CompiledLogisticRegression
from ML.neighbors_inference import CompiledKNeighbors
from ML.svm_inference import CompiledCalibratedSVC
from ML.training import TrainingOptions, train_model
from tests.ML.test_forest_inference import (
    BATCH_SIZES,
    assert_same_as_sklearn,
    dataset,
    near_thresholds,
)

Compiled = CompiledGradientBoosting | CompiledHistGradientBoosting


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One thread, as in the server's workers: HistGradientBoosting's OpenMP spins otherwise."""
    with threadpool_limits(limits=1):
        yield


def ten_classes() -> tuple[np.ndarray, np.ndarray]:
    """Ten classes: softmax's row sums then add pairwise in numpy, where layout matters."""
    features, labels = make_classification(
        n_samples=400, n_features=6, n_informative=5, n_redundant=0, n_classes=10,
        n_clusters_per_class=1, random_state=10,
    )  # fmt: skip
    return np.round(features * 2), labels


def split_thresholds(compiled: Compiled, n_features: int) -> list[np.ndarray]:
    nodes = compiled._flat.nodes
    is_split = nodes["left"] != np.arange(len(nodes))
    feature, threshold = nodes["feature"], nodes["threshold"]
    return [np.unique(threshold[is_split & (feature == f)]) for f in range(n_features)]


def probe_rows(
    features: np.ndarray, compiled: Compiled, n_rows: int, seed: int, *, nan_share: float = 0.0
) -> np.ndarray:
    """Random rows mixing training values, values at and around thresholds and uniform noise."""
    rng = np.random.default_rng(seed)
    columns = []
    for column, thresholds in enumerate(split_thresholds(compiled, features.shape[1])):
        seen = features[:, column]
        low, high = np.nanmin(seen) - 1, np.nanmax(seen) + 1
        pool = np.concatenate([seen, near_thresholds(thresholds), rng.uniform(low, high, 50)])
        pool = pool[np.isfinite(pool) & (np.abs(pool) < 1e30)]
        columns.append(rng.choice(pool, size=n_rows))
    rows = np.column_stack(columns)
    rows[rng.random(rows.shape) < nan_share] = np.nan
    return rows


def compiled_model(estimator: Any) -> Compiled:
    compiled = CompiledGradientBoosting.compile(estimator) or CompiledHistGradientBoosting.compile(
        estimator
    )
    assert compiled is not None
    assert np.array_equal(compiled.classes_, estimator.classes_)
    assert compiled.n_features_in_ == estimator.n_features_in_
    return compiled


def assert_matches(estimator: Any, compiled: Compiled, rows: np.ndarray) -> None:
    labels, proba = compiled.predict_with_proba(rows)
    assert_same_as_sklearn(estimator.predict_proba(rows), estimator.predict(rows), proba, labels)


# ---------------------------------------------------------------------------------------------
# The models on their own
# ---------------------------------------------------------------------------------------------

GB = GradientBoostingClassifier
HGB = HistGradientBoostingClassifier
BOOSTING_CASES: list[tuple[str, Callable[[], Any]]] = [
    ("iris", lambda: GB(random_state=0)),
    ("iris", lambda: HGB(random_state=0)),
    ("c2-int", lambda: GB(n_estimators=50, max_depth=4, random_state=1)),
    ("c2-str", lambda: HGB(max_iter=50, random_state=2)),
    ("c2-int", lambda: GB(n_estimators=30, subsample=0.7, learning_rate=0.3, random_state=3)),
    ("c2-int", lambda: HGB(max_iter=200, early_stopping=True, random_state=4)),
    ("c3-str", lambda: GB(n_estimators=200, n_iter_no_change=3, random_state=5)),
    ("c3-int", lambda: HGB(learning_rate=0.5, max_leaf_nodes=8, l2_regularization=1.0)),
    ("c7-int", lambda: GB(n_estimators=10, init="zero", random_state=6)),
    ("c7-str", lambda: HGB(max_iter=20, max_depth=3, random_state=7)),
    ("c10", lambda: GB(n_estimators=5, random_state=8)),
    ("c10", lambda: HGB(max_iter=10, random_state=9)),
]


@cache
def fitted_boosting(case: int) -> tuple[Any, np.ndarray]:
    name, build = BOOSTING_CASES[case]
    features, labels = ten_classes() if name == "c10" else dataset(name)
    return build().fit(features, labels), features


@pytest.mark.parametrize("case", range(len(BOOSTING_CASES)))
@pytest.mark.parametrize("n_rows", BATCH_SIZES)
def test_compiled_boosting_matches_sklearn(case: int, n_rows: int) -> None:
    estimator, features = fitted_boosting(case)
    compiled = compiled_model(estimator)
    rows = probe_rows(features, compiled, n_rows, seed=case * 1000 + n_rows)
    assert_matches(estimator, compiled, rows)
    assert np.array_equal(
        compiled.decision_function(rows).ravel(), estimator.decision_function(rows).ravel()
    )


@pytest.mark.parametrize("nan_in_training", [False, True])
def test_compiled_hist_gradient_boosting_routes_nan_like_sklearn(nan_in_training: bool) -> None:
    for name in ("c2-int", "c3-str"):
        features, labels = dataset(name)
        features = features.copy()
        if nan_in_training:
            features[np.random.default_rng(0).random(features.shape) < 0.2] = np.nan
        estimator = HGB(max_iter=30, random_state=0).fit(features, labels)
        compiled = compiled_model(estimator)
        for n_rows in BATCH_SIZES:
            rows = probe_rows(features, compiled, n_rows, seed=n_rows, nan_share=0.3)
            assert_matches(estimator, compiled, rows)


def test_compiled_hist_gradient_boosting_reads_infinity_as_sklearn_does() -> None:
    estimator, features = fitted_boosting(1)
    compiled = compiled_model(estimator)
    rows = np.repeat(features[:4], 3, axis=0)
    rows[0::3, 2] = np.inf
    rows[1::3, 3] = -np.inf
    assert_matches(estimator, compiled, rows)


def categorical_data(classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Column 0 a category code 0..11 that decides the label with column 1; columns 2-3 noise."""
    rng = np.random.default_rng(classes)
    codes = rng.integers(0, 12, 600).astype(np.float64)
    value = rng.normal(size=600)
    labels = (codes.astype(int) * 7 % classes + (value > 0.5)) % classes
    features = np.column_stack([codes, value, rng.normal(size=600), rng.normal(size=600)])
    features[rng.random(600) < 0.1, 0] = np.nan
    return features, labels


@pytest.mark.parametrize("classes", [2, 3])
def test_compiled_hist_gradient_boosting_categorical_splits_match_sklearn(classes: int) -> None:
    features, labels = categorical_data(classes)
    estimator = HGB(max_iter=30, categorical_features=[0], random_state=0).fit(features, labels)
    compiled = compiled_model(estimator)
    assert compiled._flat.categorical is not None
    assert compiled._flat.categorical.is_categorical.any()
    rng = np.random.default_rng(classes)
    for n_rows in BATCH_SIZES:
        rows = probe_rows(features, compiled, n_rows, seed=n_rows)
        # Seen and unseen categories (fractions, negatives, infinity), -0.0 and NaN.
        odd_codes = [0.0, 3.0, 11.0, 12.0, 400.0, 2.7, -0.0, -0.5, -3.0, np.nan]
        rows[:, 0] = rng.choice(odd_codes, size=n_rows)
        assert_matches(estimator, compiled, rows)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 1e39, np.nan])
def test_compiled_gradient_boosting_refuses_what_sklearn_refuses(bad: float) -> None:
    estimator, _ = fitted_boosting(0)
    compiled = compiled_model(estimator)
    rows = np.array([[5.0, 3.0, 1.5, bad]])
    with pytest.raises(ValueError), np.errstate(over="ignore"):
        estimator.predict_proba(rows)
    with pytest.raises(ValueError, match=r"infinity|NaN"):
        compiled.predict_proba(rows)


@pytest.mark.parametrize("shape", [(0, 4), (1, 3), (4,), (1, 5)])
@pytest.mark.parametrize("case", [0, 1])
def test_compiled_boosting_refuses_wrong_shapes(shape: tuple[int, ...], case: int) -> None:
    compiled = compiled_model(fitted_boosting(case)[0])
    with pytest.raises(ValueError, match="4 columns"):
        compiled.predict_proba(np.zeros(shape))


class MyBoosting(GradientBoostingClassifier):
    """A subclass may change predict_proba: it is not compiled."""


def fitted(estimator: Any) -> Any:
    return estimator.fit(*dataset("iris"))


@pytest.mark.parametrize(
    "build",
    [
        lambda: GB(n_estimators=3),  # not fitted
        lambda: HGB(max_iter=3),  # not fitted
        lambda: fitted(MyBoosting(n_estimators=3)),
        lambda: fitted(GB(n_estimators=3, init=LogisticRegression(max_iter=500))),
        lambda: GB(n_estimators=3, loss="exponential").fit(*dataset("c2-int")),
        lambda: fitted(RandomForestClassifier(n_estimators=3)),
        lambda: fitted(LogisticRegression(max_iter=500)),
        lambda: HGB(max_iter=3).fit(
            pd.DataFrame({"a": pd.Categorical(["x", "y"] * 20), "b": range(40)}), [0, 1] * 20
        ),  # text categories, encoded by the estimator's own preprocessor
        lambda: None,
    ],
    ids=[
        "unfitted-gb", "unfitted-hgb", "subclass", "init-estimator", "exponential-loss",
        "forest", "logistic", "hgb-own-categories", "none",
    ],
)  # fmt: skip
def test_compiled_boosting_returns_none_for_unsupported(build: Callable[[], Any]) -> None:
    estimator = build()
    assert CompiledGradientBoosting.compile(estimator) is None
    assert CompiledHistGradientBoosting.compile(estimator) is None


def test_gradient_boosting_binary_label_at_zero_is_sklearns() -> None:
    """At a decision of exactly 0 sklearn's GradientBoosting says class 1, HistGB class 0."""
    features, labels = dataset("c2-str")
    for estimator in (GB(n_estimators=1, max_depth=1), HGB(max_iter=1, max_depth=2)):
        estimator.fit(features, labels)
        compiled = compiled_model(estimator)
        raw = np.array([[0.0], [1e-300], [-1e-300]])
        expected = [1 if isinstance(estimator, GB) else 0, 1, 0]
        assert compiled._class_indices(raw).tolist() == expected


# ---------------------------------------------------------------------------------------------
# Every registry estimator, trained by ML/training.py, behind CompiledPipeline
# ---------------------------------------------------------------------------------------------


def csv_dataset(frame: pd.DataFrame, target: str) -> Dataset:
    text = frame.to_csv(index=False)
    return read_labelled_csv(io.BytesIO(text.encode()), target, DatasetLimits())


@cache
def registry_dataset(name: str) -> Dataset:
    """iris; a binary problem with string labels; the same with 15% of the cells empty."""
    features, labels = dataset("iris" if name == "iris" else "c2-str")
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
    if name == "binary-nan":
        frame = frame.mask(np.random.default_rng(0).random(frame.shape) < 0.15)
    frame["label"] = labels
    return csv_dataset(frame, "label")


@cache
def trained_pipeline(estimator: str, name: str) -> Any:
    with threadpool_limits(limits=1):
        return train_model(registry_dataset(name), TrainingOptions(estimator=estimator)).pipeline


def raw_rows(data: Dataset, n_rows: int, seed: int) -> np.ndarray:
    """Rows near the training rows: their values, shifted a little, some missing."""
    rng = np.random.default_rng(seed)
    base = data.features.to_numpy(np.float64)[rng.integers(0, len(data.features), n_rows)]
    rows = base + rng.choice([0.0, 0.0, 0.05, -0.25, 1e-9], size=base.shape)
    rows[rng.random(rows.shape) < 0.15] = np.nan
    return rows


def trained_on_frame(
    estimator: str, features: np.ndarray, labels: np.ndarray, nan_share: float
) -> tuple[Any, Dataset]:
    """(pipeline, dataset): `estimator` trained by fastml on these rows, a share of cells empty."""
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
    frame = frame.mask(np.random.default_rng(1).random(frame.shape) < nan_share)
    frame["label"] = labels
    data = csv_dataset(frame, "label")
    with threadpool_limits(limits=1):
        return train_model(data, TrainingOptions(estimator=estimator)).pipeline, data


def assert_pipeline_matches(pipeline: Any, data: Dataset, kind: type) -> None:
    """Compiled with `kind` as its model, and sklearn's labels and probabilities for raw rows."""
    fast = CompiledPipeline.compile(pipeline)
    assert fast is not None
    assert type(fast.model) is kind
    assert fast.feature_names == list(data.features.columns)
    for n_rows in (1, 2, 64, 300):
        rows = raw_rows(data, n_rows, seed=n_rows)
        frame = pd.DataFrame(rows, columns=fast.feature_names)
        labels, proba = fast.predict_with_proba(rows)
        assert proba is not None
        assert_same_as_sklearn(
            pipeline.predict_proba(frame), pipeline.predict(frame), proba, labels
        )
        only_labels, no_proba = fast.predict_with_proba(rows, with_probabilities=False)
        assert np.array_equal(only_labels, labels)
        assert no_proba is None or np.array_equal(no_proba, proba)


@pytest.mark.parametrize("name", ["iris", "binary", "binary-nan"])
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_registry_estimator_compiles_and_matches_its_pipeline(
    estimator: str, name: str
) -> None:
    expected_kind = {
        "gradient_boosting": CompiledGradientBoosting,
        "hist_gradient_boosting": CompiledHistGradientBoosting,
        "logistic_regression": CompiledLogisticRegression,
        "gaussian_nb": CompiledGaussianNB,
        "svc": CompiledCalibratedSVC,
        "knn": CompiledKNeighbors,
    }.get(estimator, CompiledForest if "forest" in estimator or "tree" in estimator else None)
    assert expected_kind is not None
    assert_pipeline_matches(
        trained_pipeline(estimator, name), registry_dataset(name), expected_kind
    )


def test_hist_gradient_boosting_with_categorical_features_compiles_through_training() -> None:
    """A category code column declared categorical with the estimator's own parameter."""
    features, labels = categorical_data(3)
    frame = pd.DataFrame(features, columns=["code", "value", "noise1", "noise2"])
    frame["code"] = frame["code"].fillna(5.0)  # the median imputer would not fill a whole code
    frame["label"] = np.array(["a", "b", "c"])[labels]
    options = TrainingOptions(
        estimator="hist_gradient_boosting", params={"categorical_features": [0], "max_iter": 30}
    )
    with threadpool_limits(limits=1):
        pipeline = train_model(csv_dataset(frame, "label"), options).pipeline
    fast = CompiledPipeline.compile(pipeline)
    assert fast is not None
    assert isinstance(fast.model, CompiledHistGradientBoosting)
    assert fast.model._flat.categorical is not None
    rng = np.random.default_rng(0)
    rows = frame.drop(columns="label").to_numpy(np.float64)[rng.integers(0, 600, 500)]
    rows[:, 0] = rng.choice([0.0, 4.0, 11.0, 12.0, 30.0, np.nan], size=500)
    expected = pd.DataFrame(rows, columns=fast.feature_names)
    labels, proba = fast.predict_with_proba(rows)
    assert proba is not None
    assert_same_as_sklearn(
        pipeline.predict_proba(expected), pipeline.predict(expected), proba, labels
    )


@pytest.mark.parametrize("estimator", ["gradient_boosting", "hist_gradient_boosting"])
def test_one_hot_categorical_columns_are_left_to_sklearn(
    estimator: str, mixed_dataset: Dataset
) -> None:
    """Text columns are one-hot encoded in the pipeline: not compiled (yet), served by sklearn."""
    with threadpool_limits(limits=1):
        pipeline = train_model(mixed_dataset, TrainingOptions(estimator=estimator)).pipeline
    assert CompiledPipeline.compile(pipeline) is None


# ---------------------------------------------------------------------------------------------
# LogisticRegression (ML/linear_inference.py)
# ---------------------------------------------------------------------------------------------


class MyLogistic(LogisticRegression):
    """A subclass may change predict_proba: it is not compiled."""


class MyGaussianNB(GaussianNB):
    """Likewise."""


CLOSED_FORM = [
    (
        lambda: LogisticRegression(max_iter=2000),
        CompiledLogisticRegression,
        lambda: MyLogistic(max_iter=2000),
    ),
    (GaussianNB, CompiledGaussianNB, MyGaussianNB),
]


@pytest.mark.parametrize("name", ["iris", "c2-str", "c7-int", "c10"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("kind", range(len(CLOSED_FORM)), ids=["logistic", "gaussian_nb"])
def test_compiled_closed_form_models_match_sklearn(name: str, order: str, kind: int) -> None:
    build, compiler, subclass = CLOSED_FORM[kind]
    features, labels = ten_classes() if name == "c10" else dataset(name)
    estimator = build().fit(features, labels)
    compiled = compiler.compile(estimator)
    assert compiled is not None
    rng = np.random.default_rng(1)
    for n_rows in BATCH_SIZES:
        rows = features[rng.integers(0, len(features), n_rows)] + rng.normal(size=(n_rows, 1)) * 3
        rows = np.asarray(rows, order=order)
        labels_out, proba = compiled.predict_with_proba(rows)
        assert_same_as_sklearn(
            estimator.predict_proba(rows), estimator.predict(rows), proba, labels_out
        )
    with pytest.raises(ValueError, match="NaN"):
        compiled.predict_with_proba(np.full((1, features.shape[1]), np.nan))
    assert compiler.compile(subclass().fit(features, labels)) is None
    assert compiler.compile(build()) is None
