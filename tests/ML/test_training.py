"""Tests for ML/training.py: pipelines, holdout and CV training, metrics and metadata."""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from ML import training
from ML.datasets import Dataset, DatasetLimits, read_evaluation_csv, read_labelled_csv
from ML.errors import InvalidDataset, InvalidParams, UnknownEstimator
from ML.estimators import ESTIMATORS
from ML.features import Feature, FeatureKind
from ML.json_input import frame_from_rows
from ML.scores import aligned_labels, classification_metrics
from ML.training import (
    CLASSIFIER_STEP,
    PREPROCESS_STEP,
    TrainingOptions,
    build_pipeline,
    compute_metrics,
    json_safe,
    train_model,
    validate_options,
)
from tests.ML.samples import COLORS, mixed_rows

METRIC_KEYS = {
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "confusion_matrix",
    "labels",
    "test_rows",
}
METADATA_KEYS = {
    "estimator",
    "params",
    "features",
    "target_variable",
    "classes",
    "metrics",
    "dataset_rows",
    "library_versions",
    "duration_seconds",
    "trained_at",
    "warnings",
}
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One thread per estimator, as in the server's workers (faster on a busy machine)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def iris_test(iris_test_csv: Path, iris: Dataset) -> tuple[pd.DataFrame, pd.Series]:
    return read_evaluation_csv(iris_test_csv, "species", iris.schema, DatasetLimits())


def read_bytes(content: str, target: str = "y") -> Dataset:
    return read_labelled_csv(io.BytesIO(content.encode()), target, DatasetLimits())


# ---------------------------------------------------------------------------------------------
# Every registered estimator
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_trains_on_iris_without_warnings(
    estimator: str, iris: Dataset, iris_test: tuple[pd.DataFrame, pd.Series]
) -> None:
    trained = train_model(iris, TrainingOptions(estimator=estimator))

    metadata = trained.metadata
    assert metadata["warnings"] == []
    assert set(metadata) >= METADATA_KEYS
    json.dumps(metadata, allow_nan=False)
    assert metadata["estimator"] == estimator
    assert metadata["classes"] == IRIS_CLASSES
    assert metadata["metrics"]["accuracy"] > 0.8
    assert isinstance(metadata["metrics"]["roc_auc"], float)
    features, target = iris_test
    predictions = trained.pipeline.predict(features)
    assert all(isinstance(label, str) for label in predictions.tolist())
    assert set(predictions.tolist()) <= set(IRIS_CLASSES)
    assert compute_metrics(trained.pipeline, features, target)["accuracy"] > 0.8


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_trains_on_mixed_data_and_ignores_unknown_categories(
    estimator: str, mixed_dataset: Dataset
) -> None:
    trained = train_model(mixed_dataset, TrainingOptions(estimator=estimator))

    assert trained.metadata["warnings"] == []
    assert trained.metadata["classes"] == ["no", "yes"]
    rows: list[dict[str, Any]] = [
        {"size": 9, "color": "purple", "flag": "maybe"},  # categories never seen in training
        {"size": None, "color": None, "flag": None},
        {"size": 1, "color": "red", "flag": True},
    ]
    frame = frame_from_rows(rows, mixed_dataset.schema)
    predictions = trained.pipeline.predict(frame)
    probabilities = trained.pipeline.predict_proba(frame)
    assert set(predictions.tolist()) <= {"no", "yes"}
    assert probabilities.shape == (3, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)


# ---------------------------------------------------------------------------------------------
# Labels, metadata, options
# ---------------------------------------------------------------------------------------------


def test_integer_labels_stay_integers(int_labels_dataset: Dataset) -> None:
    trained = train_model(int_labels_dataset, TrainingOptions(estimator="logistic_regression"))

    classes = trained.metadata["classes"]
    assert classes == [0, 1, 2]
    assert all(type(label) is int for label in classes)
    assert all(type(label) is int for label in trained.metadata["metrics"]["labels"])
    predictions = trained.pipeline.predict(int_labels_dataset.features.head(3))
    assert all(isinstance(label, int) for label in predictions.tolist())


def test_boolean_and_float_labels_keep_their_types() -> None:
    rows = "\n".join(
        f"{i},{'True' if i % 2 else 'False'},{1.0 if i % 2 else 2.0}" for i in range(20)
    )

    as_bool = train_model(
        read_bytes(f"a,y,z\n{rows}\n"), TrainingOptions(estimator="decision_tree")
    )
    as_float = train_model(
        read_bytes(f"a,y,z\n{rows}\n", target="z"), TrainingOptions(estimator="decision_tree")
    )

    assert as_bool.metadata["classes"] == [False, True]
    assert as_float.metadata["classes"] == [1.0, 2.0]
    assert all(type(label) is float for label in as_float.metadata["classes"])


def test_metadata_describes_the_training(mixed_dataset: Dataset) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    trained = train_model(
        mixed_dataset,
        TrainingOptions(estimator="random_forest", params={"n_estimators": 5}, test_size=0.25),
    )

    metadata = trained.metadata
    assert metadata["target_variable"] == "label"
    assert metadata["dataset_rows"] == 48
    assert metadata["features"] == [feature.to_dict() for feature in mixed_dataset.schema]
    # The categories a form can offer: every one of the training CSV, not just the fitted part.
    assert [feature.get("categories") for feature in metadata["features"]] == [
        None,
        sorted(COLORS),
        ["False", "True"],
    ]
    assert metadata["params"]["n_estimators"] == 5
    assert metadata["params"]["random_state"] == 42
    assert metadata["params"]["n_jobs"] == 1
    assert set(metadata["library_versions"]) == {"python", "sklearn", "numpy", "pandas", "joblib"}
    assert metadata["duration_seconds"] >= 0
    trained_at = datetime.fromisoformat(metadata["trained_at"])
    assert trained_at.tzinfo is not None and trained_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert trained_at >= before
    metrics = metadata["metrics"]
    assert set(metrics) >= METRIC_KEYS | {"train_accuracy", "evaluation", "test_size", "train_rows"}
    assert "rows" not in metrics and "rows" not in metadata  # named for what they count
    assert metrics["evaluation"] == "holdout"
    assert metrics["test_size"] == 0.25
    assert (metrics["train_rows"], metrics["test_rows"]) == (36, 12)
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    assert metrics["labels"] == metadata["classes"] == ["no", "yes"]
    assert 0 <= metrics["train_accuracy"] <= 1
    assert [step for step, _ in trained.pipeline.steps] == [PREPROCESS_STEP, CLASSIFIER_STEP]


def test_the_seed_comes_from_the_options_unless_params_set_it(mixed_dataset: Dataset) -> None:
    seeded = train_model(mixed_dataset, TrainingOptions(params={"n_estimators": 5}, random_state=7))
    explicit = train_model(
        mixed_dataset,
        TrainingOptions(params={"n_estimators": 5, "random_state": 3}, random_state=7),
    )

    assert seeded.metadata["params"]["random_state"] == 7
    assert explicit.metadata["params"]["random_state"] == 3


def test_training_is_deterministic(mixed_dataset: Dataset) -> None:
    options = TrainingOptions(estimator="gradient_boosting", params={"n_estimators": 20})

    first = train_model(mixed_dataset, options).metadata["metrics"]
    second = train_model(mixed_dataset, options).metadata["metrics"]

    assert first == second


def test_train_accuracy_is_measured_on_a_sample_of_a_large_training_part(
    mixed_dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "TRAIN_ACCURACY_MAX_ROWS", 10)

    trained = train_model(mixed_dataset, TrainingOptions(estimator="decision_tree", cv=3))

    # Measured on 10 of the 48 rows: a whole number of tenths.
    tenths = trained.metadata["metrics"]["train_accuracy"] * 10
    assert tenths == pytest.approx(round(tenths))


def test_warnings_are_recorded_not_raised(iris: Dataset) -> None:
    trained = train_model(
        iris,
        TrainingOptions(estimator="logistic_regression", params={"max_iter": 1}),
    )

    assert any(text.startswith("ConvergenceWarning: ") for text in trained.metadata["warnings"])


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        (TrainingOptions(test_size=0.2, cv=5), InvalidParams, "test_size and cv are exclusive"),
        (TrainingOptions(test_size=0), InvalidParams, "test_size must be a fraction"),
        (TrainingOptions(test_size=1), InvalidParams, "test_size must be a fraction"),
        (TrainingOptions(test_size=-0.5), InvalidParams, "test_size must be a fraction"),
        (TrainingOptions(test_size=math.nan), InvalidParams, "test_size must be a fraction"),
        (TrainingOptions(test_size=True), InvalidParams, "test_size must be a fraction"),
        (TrainingOptions(cv=1), InvalidParams, "cv must be a whole number of folds from 2 to 20"),
        (TrainingOptions(cv=21), InvalidParams, "cv must be a whole number"),
        (TrainingOptions(cv=2.5), InvalidParams, "cv must be a whole number"),  # type: ignore[arg-type]
        (TrainingOptions(cv=True), InvalidParams, "cv must be a whole number"),
        (TrainingOptions(estimator="nope"), UnknownEstimator, "unknown estimator 'nope'"),
        (TrainingOptions(params={"bogus": 1}), InvalidParams, "unknown parameter"),
        (TrainingOptions(params={"n_estimators": 0}), InvalidParams, "'n_estimators' parameter"),
        (TrainingOptions(params=[1]), InvalidParams, "params must be a JSON object"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_rejected_before_training(
    options: TrainingOptions, error: type[Exception], fragment: str, mixed_dataset: Dataset
) -> None:
    with pytest.raises(error, match=fragment):
        validate_options(options)
    with pytest.raises(error, match=fragment):
        train_model(mixed_dataset, options)


def test_good_options_validate() -> None:
    validate_options(TrainingOptions())
    validate_options(TrainingOptions(estimator="svc", params={"C": 2.0}, cv=3))
    validate_options(TrainingOptions(test_size=0.5))


# ---------------------------------------------------------------------------------------------
# Holdout and cross-validation
# ---------------------------------------------------------------------------------------------


def test_cross_validation_measures_every_row_then_refits_on_all(mixed_dataset: Dataset) -> None:
    trained = train_model(mixed_dataset, TrainingOptions(estimator="knn", cv=4))

    metrics = trained.metadata["metrics"]
    assert metrics["evaluation"] == "cv"
    assert metrics["cv"] == 4
    assert "test_size" not in metrics
    assert metrics["test_rows"] == metrics["train_rows"] == 48
    assert sum(map(sum, metrics["confusion_matrix"])) == 48
    assert isinstance(metrics["roc_auc"], float)
    assert trained.metadata["warnings"] == []
    # Refitted on every row: the final KNN remembers all 48.
    assert trained.pipeline[CLASSIFIER_STEP].n_samples_fit_ == 48


def test_cross_validation_without_stratification_when_a_class_is_rare() -> None:
    lines = [f"{i},{'rare' if i in (3, 11) else ('a' if i % 2 else 'b')}" for i in range(30)]
    dataset = read_bytes("x,y\n" + "\n".join(lines) + "\n")

    trained = train_model(dataset, TrainingOptions(estimator="random_forest", cv=3))

    assert trained.metadata["metrics"]["test_rows"] == trained.metadata["dataset_rows"] == 30
    assert trained.metadata["classes"] == ["a", "b", "rare"]


def test_cross_validation_needs_as_many_rows_as_folds() -> None:
    dataset = read_bytes("x,y\n1,a\n2,b\n3,a\n")

    with pytest.raises(InvalidDataset, match="cv=5 needs at least 5 rows; the dataset has 3"):
        train_model(dataset, TrainingOptions(cv=5))


def test_holdout_falls_back_to_a_plain_split_when_it_cannot_stratify() -> None:
    lines = [f"{i},{'a' if i % 2 else 'b'}" for i in range(20)] + ["20,lonely"]
    dataset = read_bytes("x,y\n" + "\n".join(lines) + "\n")

    trained = train_model(
        dataset, TrainingOptions(estimator="decision_tree", test_size=0.3, random_state=1)
    )

    assert trained.metadata["metrics"]["test_rows"] == 7
    assert trained.metadata["metrics"]["train_rows"] == 14


def test_a_dataset_too_small_to_split_says_how_many_rows_it_needs() -> None:
    dataset = read_bytes("x,y\n1,a\n2,b\n")

    with pytest.raises(InvalidDataset) as caught:
        train_model(dataset, TrainingOptions())

    assert "too small for a holdout split" in caught.value.message
    assert "use at least 6 rows with at least 2 per class" in caught.value.message


def test_a_training_part_with_one_class_is_too_small() -> None:
    dataset = read_bytes("x,y\n1,a\n2,a\n3,a\n4,a\n5,b\n")

    # With this seed the one 'b' row lands in the test part.
    with pytest.raises(InvalidDataset, match="too small for a holdout split"):
        train_model(dataset, TrainingOptions(test_size=0.2, random_state=5))


def test_an_estimator_that_cannot_fit_the_data_is_an_invalid_dataset(
    mixed_dataset: Dataset,
) -> None:
    with pytest.raises(InvalidDataset, match="knn could not be trained on this data"):
        train_model(mixed_dataset, TrainingOptions(estimator="knn", params={"n_neighbors": 100}))


# ---------------------------------------------------------------------------------------------
# build_pipeline
# ---------------------------------------------------------------------------------------------

MIXED_SCHEMA = [
    Feature("size", FeatureKind.NUMERIC, "int64"),
    Feature("color", FeatureKind.CATEGORICAL, "str"),
]


def test_scaling_only_for_estimators_that_need_it() -> None:
    scaled = build_pipeline(MIXED_SCHEMA, "knn", {})
    unscaled = build_pipeline(MIXED_SCHEMA, "random_forest", {})

    numeric_scaled = scaled[PREPROCESS_STEP].transformers[0][1]
    numeric_unscaled = unscaled[PREPROCESS_STEP].transformers[0][1]
    assert any(isinstance(step, StandardScaler) for _, step in numeric_scaled.steps)
    assert not any(isinstance(step, StandardScaler) for _, step in numeric_unscaled.steps)


def test_columns_are_selected_by_name_and_unknown_categories_ignored() -> None:
    pipeline = build_pipeline(MIXED_SCHEMA, "random_forest", {})

    transformers = {name: columns for name, _, columns in pipeline[PREPROCESS_STEP].transformers}
    assert transformers == {"numeric": ["size"], "categorical": ["color"]}
    encoder = pipeline[PREPROCESS_STEP].transformers[1][1].steps[-1][1]
    assert isinstance(encoder, OneHotEncoder)
    assert encoder.handle_unknown == "ignore"


def test_dense_features_for_estimators_that_need_them() -> None:
    pipeline = build_pipeline(MIXED_SCHEMA, "hist_gradient_boosting", {})

    assert pipeline[PREPROCESS_STEP].sparse_threshold == 0
    assert pipeline[PREPROCESS_STEP].transformers[1][1].steps[-1][1].sparse_output is False


def test_numeric_only_and_categorical_only_schemas() -> None:
    numeric = build_pipeline(MIXED_SCHEMA[:1], "svc", {})
    categorical = build_pipeline(MIXED_SCHEMA[1:], "svc", {})

    assert [name for name, _, _ in numeric[PREPROCESS_STEP].transformers] == ["numeric"]
    assert [name for name, _, _ in categorical[PREPROCESS_STEP].transformers] == ["categorical"]


# ---------------------------------------------------------------------------------------------
# The same model and metrics as scikit-learn's plain fit, predict and predict_proba
# ---------------------------------------------------------------------------------------------

# Forests and boosting take labels from their probability pass; SVC's predict is not the
# argmax of its probabilities; logistic regression is scaled after the medians.
SAME_AS_SKLEARN = ["hist_gradient_boosting", "random_forest", "svc", "logistic_regression"]


@pytest.fixture(params=["mixed_dataset", "iris"])  # missing cells, and none
def any_dataset(request: pytest.FixtureRequest) -> Dataset:
    dataset: Dataset = request.getfixturevalue(request.param)
    return dataset


@pytest.mark.parametrize("estimator", SAME_AS_SKLEARN)
def test_holdout_is_sklearns_fit_predict_and_predict_proba(
    estimator: str, any_dataset: Dataset
) -> None:
    dataset = any_dataset
    options = TrainingOptions(estimator=estimator)
    train_x, test_x, train_y, test_y = training._holdout_split(dataset, 0.2, 42)
    params = training._estimator_params(options)
    expected = build_pipeline(dataset.schema, estimator, params).fit(train_x, train_y)
    classes = np.asarray(expected.classes_)
    expected_metrics = classification_metrics(
        aligned_labels(test_y.to_numpy(), classes),
        expected.predict(test_x),
        expected.predict_proba(test_x),
        classes,
    )

    trained = train_model(dataset, options)

    assert pickle.dumps(trained.pipeline) == pickle.dumps(expected)
    assert trained.metadata["metrics"] == {**trained.metadata["metrics"], **expected_metrics}


@pytest.mark.parametrize("estimator", SAME_AS_SKLEARN)
def test_cv_is_sklearns_fit_predict_and_predict_proba(estimator: str, any_dataset: Dataset) -> None:
    dataset = any_dataset
    options = TrainingOptions(estimator=estimator, cv=3)
    features, target = dataset.features, dataset.target
    template = build_pipeline(dataset.schema, estimator, training._estimator_params(options))
    labels = np.unique(target.to_numpy())
    predicted = np.empty(len(target), dtype=labels.dtype)
    probabilities = np.zeros((len(target), len(labels)))
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=42)
    for train_index, test_index in folds.split(features, target):
        fold = clone(template).fit(features.iloc[train_index], target.iloc[train_index])
        predicted[test_index] = fold.predict(features.iloc[test_index])
        probabilities[test_index] = fold.predict_proba(features.iloc[test_index])
    expected = clone(template).fit(features, target)
    expected_metrics = classification_metrics(
        target.to_numpy(), predicted, probabilities, np.asarray(expected.classes_)
    )

    trained = train_model(dataset, options)

    assert pickle.dumps(trained.pipeline) == pickle.dumps(expected)
    assert trained.metadata["metrics"] == {**trained.metadata["metrics"], **expected_metrics}


# ---------------------------------------------------------------------------------------------
# compute_metrics
# ---------------------------------------------------------------------------------------------


def test_roc_auc_is_none_without_predict_proba(iris: Dataset) -> None:
    pipeline = Pipeline([("scale", StandardScaler()), ("classifier", RidgeClassifier())])
    pipeline.fit(iris.features, iris.target)

    metrics = compute_metrics(pipeline, iris.features, iris.target)

    assert metrics["roc_auc"] is None
    assert metrics["accuracy"] > 0.7
    assert set(metrics) == METRIC_KEYS


def test_roc_auc_is_none_when_a_class_is_absent(
    iris: Dataset, iris_test: tuple[pd.DataFrame, pd.Series]
) -> None:
    trained = train_model(iris, TrainingOptions(estimator="logistic_regression"))
    features, target = iris_test
    keep = (target != "virginica").to_numpy()

    metrics = compute_metrics(trained.pipeline, features[keep], target[keep])

    assert metrics["roc_auc"] is None
    assert metrics["labels"] == IRIS_CLASSES
    assert len(metrics["confusion_matrix"]) == 3
    assert metrics["confusion_matrix"][2] == [0, 0, 0]


def test_binary_roc_auc_with_text_labels(mixed_dataset: Dataset) -> None:
    trained = train_model(mixed_dataset, TrainingOptions(estimator="logistic_regression"))

    metrics = compute_metrics(trained.pipeline, mixed_dataset.features, mixed_dataset.target)

    assert 0.5 < metrics["roc_auc"] <= 1.0


def test_labels_the_model_never_saw_get_their_own_row(
    iris: Dataset, iris_test: tuple[pd.DataFrame, pd.Series]
) -> None:
    trained = train_model(iris, TrainingOptions(estimator="knn"))
    features, target = iris_test
    relabelled = target.where(target != "setosa", "iris-setosa")

    metrics = compute_metrics(trained.pipeline, features, relabelled)

    assert metrics["labels"] == [*IRIS_CLASSES, "iris-setosa"]
    assert metrics["confusion_matrix"][3][0] == 15  # true iris-setosa, predicted setosa
    assert metrics["roc_auc"] is None


def test_numeric_looking_labels_are_compared_as_text() -> None:
    lines = [f"{i},{'7' if i % 2 else 'x'}" for i in range(30)]
    dataset = read_bytes("a,y\n" + "\n".join(lines) + "\n")
    trained = train_model(dataset, TrainingOptions(estimator="decision_tree"))
    odd = dataset.features[dataset.features["a"] % 2 == 1]

    metrics = compute_metrics(trained.pipeline, odd, pd.Series([7] * len(odd)))

    assert metrics["labels"] == ["7", "x"]
    assert sum(metrics["confusion_matrix"][0]) == len(odd)  # every 7 counted as the class "7"


def test_no_rows_to_evaluate(iris: Dataset) -> None:
    trained = train_model(iris, TrainingOptions(estimator="knn"))

    with pytest.raises(InvalidDataset, match="no rows to evaluate"):
        compute_metrics(trained.pipeline, iris.features.head(0), iris.target.head(0))


# ---------------------------------------------------------------------------------------------
# json_safe
# ---------------------------------------------------------------------------------------------


def test_json_safe_keeps_json_and_reprs_the_rest() -> None:
    value = {
        "a": np.int64(3),
        "b": [np.float64(0.5), math.nan, math.inf],
        "c": StandardScaler(),
        "d": (True, None, "x"),
        1: {"nested": np.bool_(False)},
    }

    assert json_safe(value) == {
        "a": 3,
        "b": [0.5, "nan", "inf"],
        "c": "StandardScaler()",
        "d": [True, None, "x"],
        "1": {"nested": False},
    }


def test_mixed_rows_fixture_is_balanced_enough() -> None:
    labels = [row.rsplit(",", 1)[1] for row in mixed_rows(48)]
    assert min(labels.count("yes"), labels.count("no")) >= 12
