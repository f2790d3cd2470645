"""Training: turns a Dataset into a fitted scikit-learn pipeline, its metrics and metadata."""

from __future__ import annotations

import logging
import math
import platform
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Integral, Real
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils import get_tags

from ML.datasets import Dataset
from ML.errors import InvalidDataset, InvalidParams
from ML.estimators import DEFAULT_ESTIMATOR, build_estimator, estimator_spec, parameter_names
from ML.features import Feature, FeatureKind
from ML.fitted_predictions import labels_and_probabilities
from ML.jobs import TrainingJobOptions
from ML.median_imputer import medians_by_partition
from ML.scores import aligned_labels, classification_metrics, native

logger = logging.getLogger(__name__)

DEFAULT_TEST_SIZE = 0.2
MIN_FOLDS = 2
MAX_FOLDS = 20
_MAX_WARNINGS = 20
# train_accuracy is measured on at most this many training rows.
TRAIN_ACCURACY_MAX_ROWS = 100_000

# Step names, for code that reaches into a trained pipeline (pipeline["classifier"]).
PREPROCESS_STEP = "preprocess"
CLASSIFIER_STEP = "classifier"


@dataclass(frozen=True)
class TrainingOptions:
    estimator: str = DEFAULT_ESTIMATOR
    params: Mapping[str, Any] = field(default_factory=dict)
    test_size: float | None = None  # holdout fraction (0 < x < 1); 0.2 when cv is None
    cv: int | None = None  # k-fold cross-validation (2..20); exclusive with test_size
    random_state: int = 42

    @classmethod
    def for_job(cls, options: TrainingJobOptions) -> TrainingOptions:
        """The estimator part of a training job's options."""
        return cls(
            estimator=options.estimator,
            params=options.params,
            test_size=options.test_size,
            cv=options.cv,
        )


@dataclass
class TrainedModel:
    pipeline: Pipeline
    metadata: dict[str, Any]  # JSON-serialisable


def validate_options(options: TrainingOptions) -> None:
    """Raise UnknownEstimator or InvalidParams for options that cannot train, before queueing."""
    if options.test_size is not None and options.cv is not None:
        raise InvalidParams(
            "test_size and cv are exclusive: send test_size for a holdout split "
            "or cv for k-fold cross-validation, not both",
            details=[{"field": "cv", "error": "exclusive with test_size"}],
        )
    if options.test_size is not None:
        size = options.test_size
        if isinstance(size, bool) or not isinstance(size, Real) or not 0 < size < 1:
            raise InvalidParams(
                f"test_size must be a fraction between 0 and 1 (exclusive), e.g. 0.2; got {size!r}",
                details=[{"field": "test_size", "error": "must be between 0 and 1"}],
            )
    if options.cv is not None:
        folds = options.cv
        if (
            isinstance(folds, bool)
            or not isinstance(folds, Integral)
            or not (MIN_FOLDS <= folds <= MAX_FOLDS)
        ):
            raise InvalidParams(
                f"cv must be a whole number of folds from {MIN_FOLDS} to {MAX_FOLDS}; "
                f"got {folds!r}",
                details=[{"field": "cv", "error": f"must be from {MIN_FOLDS} to {MAX_FOLDS}"}],
            )
    if isinstance(options.random_state, bool) or not isinstance(options.random_state, Integral):
        raise InvalidParams(f"random_state must be an integer; got {options.random_state!r}")
    build_estimator(options.estimator, _estimator_params(options))


def build_pipeline(
    schema: Sequence[Feature], estimator_name: str, params: Mapping[str, Any]
) -> Pipeline:
    """Unfitted pipeline: per-column preprocessing (by column name), then the classifier.

    Numeric columns: median imputation, plus standard scaling when the estimator needs it.
    Categorical columns: most-frequent imputation and one-hot encoding; a category unseen in
    training becomes all zeros. Estimators that cannot take sparse input get dense features.
    """
    estimator = build_estimator(estimator_name, params)
    is_dense = not get_tags(estimator).input_tags.sparse
    numeric = [feature.name for feature in schema if feature.kind is FeatureKind.NUMERIC]
    categorical = [feature.name for feature in schema if feature.kind is FeatureKind.CATEGORICAL]
    transformers: list[tuple[str, Pipeline, list[str]]] = []
    if numeric:
        numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if estimator_spec(estimator_name).needs_scaling:
            numeric_steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        categorical_steps = [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=not is_dense)),
        ]
        transformers.append(("categorical", Pipeline(categorical_steps), categorical))
    preprocess = ColumnTransformer(
        transformers, remainder="drop", sparse_threshold=0.0 if is_dense else 0.3
    )
    return Pipeline([(PREPROCESS_STEP, preprocess), (CLASSIFIER_STEP, estimator)])


def train_model(dataset: Dataset, options: TrainingOptions) -> TrainedModel:
    """Fit a pipeline on `dataset` and measure it on a holdout split or by cross-validation.

    Holdout: the pipeline is fitted on the training part and measured on the test part.
    Cross-validation: metrics come from out-of-fold predictions, then the pipeline is refitted
    on every row. Warnings raised while training are recorded in metadata["warnings"].
    """
    validate_options(options)
    started = time.perf_counter()
    params = _estimator_params(options)
    with _recorded_warnings() as caught, _data_errors(options.estimator):
        if options.cv is not None:
            pipeline, metrics = _train_with_cv(dataset, options, params)
        else:
            pipeline, metrics = _train_with_holdout(dataset, options, params)
    metadata = {
        "estimator": options.estimator,
        "estimator_class": _class_path(pipeline[CLASSIFIER_STEP]),
        "params": json_safe(pipeline[CLASSIFIER_STEP].get_params(deep=True)),
        "features": [feature.to_dict() for feature in dataset.schema],
        "target_variable": dataset.target_variable,
        "classes": [native(label) for label in pipeline.classes_],
        "metrics": metrics,
        # Every row of the uploaded CSV; metrics say how many trained and how many tested.
        "dataset_rows": len(dataset.target),
        "library_versions": library_versions(),
        "duration_seconds": round(time.perf_counter() - started, 3),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "warnings": _warning_texts(caught),
    }
    logger.info(
        "trained %s on %d rows in %.2fs (accuracy %.4f)",
        options.estimator,
        metadata["dataset_rows"],
        metadata["duration_seconds"],
        metrics["accuracy"],
    )
    return TrainedModel(pipeline=pipeline, metadata=metadata)


def compute_metrics(
    pipeline: Pipeline, features: pd.DataFrame, target: pd.Series
) -> dict[str, Any]:
    """accuracy, macro precision/recall/F1, confusion matrix, ROC AUC, labels and test_rows.

    The confusion matrix's rows are true labels and its columns predictions, both in `labels`
    order: the model's classes, then any label of `target` the model never saw. roc_auc is
    None when it cannot be computed (no predict_proba, or a class absent from `target`).
    """
    if len(target) == 0:
        raise InvalidDataset("there are no rows to evaluate; send at least one labelled row")
    classes = np.asarray(pipeline.classes_)
    truth = aligned_labels(target.to_numpy(), classes)
    predicted, probabilities = labels_and_probabilities(pipeline, features)
    return classification_metrics(truth, predicted, probabilities, classes)


def fit_pipeline(pipeline: Pipeline, features: pd.DataFrame, target: pd.Series) -> None:
    """pipeline.fit, its medians taken without masked arrays (the same fitted pipeline)."""
    with medians_by_partition(pipeline):
        pipeline.fit(features, target)


# ---------------------------------------------------------------------------------------------
# Holdout and cross-validation
# ---------------------------------------------------------------------------------------------


def _train_with_holdout(
    dataset: Dataset, options: TrainingOptions, params: Mapping[str, Any]
) -> tuple[Pipeline, dict[str, Any]]:
    test_size = options.test_size if options.test_size is not None else DEFAULT_TEST_SIZE
    train_x, test_x, train_y, test_y = _holdout_split(dataset, test_size, options.random_state)
    pipeline = build_pipeline(dataset.schema, options.estimator, params)
    fit_pipeline(pipeline, train_x, train_y)
    metrics = compute_metrics(pipeline, test_x, test_y)
    metrics.update(
        train_accuracy=_train_accuracy(pipeline, train_x, train_y, options.random_state),
        evaluation="holdout",
        test_size=test_size,
        train_rows=len(train_y),
    )
    return pipeline, metrics


def _holdout_split(
    dataset: Dataset, test_size: float, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    target = dataset.target
    rows = len(target)
    counts = target.value_counts()
    test_rows = math.ceil(test_size * rows)  # as train_test_split counts them
    train_rows = rows - test_rows
    if train_rows < 2:
        raise InvalidDataset(_too_small_for_holdout(rows, test_size, len(counts)))
    # Stratify when train_test_split can: every class twice, and room for each class on both sides.
    can_stratify = counts.min() >= 2 and min(test_rows, train_rows) >= len(counts)
    train_x, test_x, train_y, test_y = train_test_split(
        dataset.features,
        target,
        test_size=test_size,
        random_state=random_state,
        stratify=target if can_stratify else None,
    )
    if train_y.nunique() < 2:
        raise InvalidDataset(_too_small_for_holdout(rows, test_size, len(counts)))
    return train_x, test_x, train_y, test_y


def _too_small_for_holdout(rows: int, test_size: float, classes: int) -> str:
    needed = next(
        n
        for n in range(2, 1_000_000)
        if n - math.ceil(test_size * n) >= max(2, classes) and math.ceil(test_size * n) >= classes
    )
    return (
        f"the dataset is too small for a holdout split with test_size={test_size}: it has "
        f"{rows} rows, and the training part must hold at least two classes; "
        f"use at least {needed} rows with at least 2 per class, or cross-validation (cv)"
    )


def _train_with_cv(
    dataset: Dataset, options: TrainingOptions, params: Mapping[str, Any]
) -> tuple[Pipeline, dict[str, Any]]:
    """Out-of-fold predictions for the metrics, then a pipeline fitted on every row.

    Each fold's model gives both labels and probabilities (one fit per fold, where
    cross_val_predict would need two passes for predict and predict_proba).
    """
    folds = int(options.cv or 0)
    features, target = dataset.features, dataset.target
    rows = len(target)
    if rows < folds:
        raise InvalidDataset(
            f"cv={folds} needs at least {folds} rows; the dataset has {rows}; "
            "use fewer folds or add rows"
        )
    labels = np.unique(target.to_numpy())
    splitter: StratifiedKFold | KFold
    if target.value_counts().min() >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=options.random_state)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=options.random_state)
    template = build_pipeline(dataset.schema, options.estimator, params)
    predicted = np.empty(rows, dtype=labels.dtype)
    probabilities: np.ndarray | None = np.zeros((rows, len(labels)))
    for train_index, test_index in splitter.split(features, target):
        train_y = target.iloc[train_index]
        if train_y.nunique() < 2:
            raise InvalidDataset(
                f"cv={folds} leaves a training fold with a single class; "
                "use fewer folds, or add rows of the rarer classes"
            )
        fold = clone(template)
        fit_pipeline(fold, features.iloc[train_index], train_y)
        fold_labels, fold_probabilities = labels_and_probabilities(fold, features.iloc[test_index])
        predicted[test_index] = fold_labels
        if probabilities is not None and fold_probabilities is not None:
            # A fold may miss a class: its columns go where that class sits among all labels.
            columns = np.searchsorted(labels, fold.classes_)
            probabilities[np.ix_(test_index, columns)] = fold_probabilities
        else:
            probabilities = None
    pipeline = clone(template)
    fit_pipeline(pipeline, features, target)
    metrics = classification_metrics(
        target.to_numpy(), predicted, probabilities, np.asarray(pipeline.classes_)
    )
    metrics.update(
        train_accuracy=_train_accuracy(pipeline, features, target, options.random_state),
        evaluation="cv",
        cv=folds,
        train_rows=rows,  # the stored model is refitted on every row
    )
    return pipeline, metrics


def _train_accuracy(
    pipeline: Pipeline, features: pd.DataFrame, target: pd.Series, random_state: int
) -> float:
    # On a sample of a large training part: predicting millions of rows (k-NN above all) would
    # cost more than the training, for a figure that only hints at overfitting.
    if len(target) > TRAIN_ACCURACY_MAX_ROWS:
        generator = np.random.default_rng(random_state)
        sample = generator.choice(len(target), size=TRAIN_ACCURACY_MAX_ROWS, replace=False)
        features, target = features.iloc[sample], target.iloc[sample]
    return float(accuracy_score(target, pipeline.predict(features)))


@contextmanager
def _data_errors(estimator: str) -> Iterator[None]:
    # Options and dataset are valid by now, so a ValueError from scikit-learn is about this data
    # with these params: too few rows for n_neighbors or the SVC's calibration folds, a
    # class_weight naming no class, ...
    try:
        yield
    except ValueError as exc:
        logger.info("%s could not be trained on the data: %s", estimator, exc)
        raise InvalidDataset(
            f"{estimator} could not be trained on this data: {exc}; "
            "add rows, change the params or choose another estimator"
        ) from None


# ---------------------------------------------------------------------------------------------
# Metadata helpers
# ---------------------------------------------------------------------------------------------


def _estimator_params(options: TrainingOptions) -> dict[str, Any]:
    """The client's params, seeded by options.random_state unless they set random_state."""
    if not isinstance(options.params, Mapping):
        raise InvalidParams(
            'params must be a JSON object of hyperparameters, e.g. {"n_estimators": 200}',
            details=[{"field": "params", "error": "must be an object"}],
        )
    params = dict(options.params)
    if "random_state" in parameter_names(options.estimator) and "random_state" not in params:
        params["random_state"] = options.random_state
    return params


def json_safe(value: Any) -> Any:
    """`value` with anything JSON cannot hold (objects, nan, inf) replaced by its repr."""
    value = native(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return repr(value)


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "joblib": joblib.__version__,
    }


def _class_path(estimator: Any) -> str:
    cls = type(estimator)
    return f"{cls.__module__}.{cls.__qualname__}"


@contextmanager
def _recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    # Convergence and metric warnings belong to the model's metadata, not to the server log.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    texts: list[str] = []
    for warning in caught:
        text = f"{warning.category.__name__}: {warning.message}"
        if text not in texts:
            texts.append(text)
    return texts[:_MAX_WARNINGS]
