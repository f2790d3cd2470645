"""Tests for ML/forest_inference.py: same labels and probabilities as scikit-learn, or None."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

from ML.config import PROJECT_DIR
from ML.forest_inference import CompiledForest, CompiledPipeline

BATCH_SIZES = (1, 2, 63, 64, 1024)
IRIS_CSV = PROJECT_DIR / "ML" / "data" / "full.csv"
NAN_SHARE = 0.15
STRING_LABELS = np.array(["ant", "bee", "cat", "dog", "eel", "fox", "gnu"])


# ---------------------------------------------------------------------------------------------
# Data and probes
# ---------------------------------------------------------------------------------------------


@cache
def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels): iris, or integer-valued synthetic data (many threshold ties).

    Names: "iris", or "c{classes}-{int|str}", e.g. "c7-str" for 7 string labels.
    """
    if name == "iris":
        frame = pd.read_csv(IRIS_CSV)
        return frame.drop(columns="species").to_numpy(np.float64), frame["species"].to_numpy()
    classes, label_kind = name[1:].split("-")
    features, labels = make_classification(
        n_samples=300,
        n_features=6,
        n_informative=4,
        n_redundant=1,
        n_classes=int(classes),
        n_clusters_per_class=1,
        random_state=int(classes),
    )
    features = np.round(features * 2)  # few distinct values: thresholds at x.5, many ties
    return features, (STRING_LABELS[labels] if label_kind == "str" else labels * 10 - 5)


def thresholds_by_feature(forest: Any, n_features: int) -> list[np.ndarray]:
    trees = getattr(forest, "estimators_", [forest])
    found: list[list[float]] = [[] for _ in range(n_features)]
    for tree in trees:
        for feature, threshold in zip(tree.tree_.feature, tree.tree_.threshold, strict=True):
            if feature >= 0:
                found[feature].append(float(threshold))
    return [np.unique(np.array(values, dtype=np.float64)) for values in found]


def near_thresholds(thresholds: np.ndarray) -> np.ndarray:
    """Each threshold, its float64 neighbours, and the float32 values around it.

    sklearn compares float32(x) with a float64 threshold, so x just above a threshold can
    still go left once rounded to float32: these are the values where a careless port errs.
    """
    if len(thresholds) == 0:
        return thresholds
    as_float32 = thresholds.astype(np.float32)
    return np.concatenate(
        [
            thresholds,
            np.nextafter(thresholds, np.inf),
            np.nextafter(thresholds, -np.inf),
            as_float32.astype(np.float64),
            np.nextafter(as_float32, np.float32(np.inf)).astype(np.float64),
            np.nextafter(as_float32, np.float32(-np.inf)).astype(np.float64),
            (as_float32.astype(np.float64) + np.nextafter(as_float32, np.float32(np.inf))) / 2,
        ]
    )


def probe_rows(
    features: np.ndarray, forest: Any, n_rows: int, seed: int, *, nan_share: float = 0.0
) -> np.ndarray:
    """Random rows mixing training values, values at and around thresholds and uniform noise."""
    rng = np.random.default_rng(seed)
    columns = []
    for column, thresholds in enumerate(thresholds_by_feature(forest, features.shape[1])):
        seen = features[:, column]
        low, high = np.nanmin(seen) - 1, np.nanmax(seen) + 1
        pool = np.concatenate([seen, near_thresholds(thresholds), rng.uniform(low, high, 50)])
        # Trees grown on NaN split "missing or not" at an infinite threshold.
        pool = pool[np.abs(pool) < 1e30]
        columns.append(rng.choice(pool, size=n_rows))
    rows = np.column_stack(columns)
    rows[rng.random(rows.shape) < nan_share] = np.nan
    return rows


def assert_same_as_sklearn(
    expected_proba: np.ndarray,
    expected_labels: np.ndarray,
    proba: np.ndarray,
    labels: np.ndarray,
) -> None:
    assert proba.dtype == np.float64
    assert proba.shape == expected_proba.shape
    assert np.array_equal(proba, expected_proba), np.abs(proba - expected_proba).max()
    assert labels.dtype == expected_labels.dtype
    assert np.array_equal(labels, expected_labels)


# ---------------------------------------------------------------------------------------------
# CompiledForest
# ---------------------------------------------------------------------------------------------

FOREST_CASES: list[tuple[str, Callable[[], Any]]] = [
    ("iris", lambda: RandomForestClassifier(n_estimators=100, random_state=0)),
    ("iris", lambda: ExtraTreesClassifier(n_estimators=100, random_state=0)),
    ("iris", lambda: RandomForestClassifier(n_estimators=7, max_depth=3, random_state=1)),
    ("iris", lambda: DecisionTreeClassifier(random_state=0)),
    ("c2-int", lambda: RandomForestClassifier(n_estimators=1, random_state=2)),
    ("c2-str", lambda: RandomForestClassifier(n_estimators=2, bootstrap=False, random_state=3)),
    ("c2-str", lambda: ExtraTreesClassifier(n_estimators=7, bootstrap=True, random_state=4)),
    ("c2-int", lambda: RandomForestClassifier(n_estimators=100, max_depth=3, random_state=5)),
    ("c3-str", lambda: RandomForestClassifier(n_estimators=7, random_state=6)),
    ("c3-int", lambda: ExtraTreesClassifier(n_estimators=100, max_depth=3, random_state=7)),
    ("c3-str", lambda: ExtraTreeClassifier(random_state=8)),
    ("c3-int", lambda: DecisionTreeClassifier(max_depth=3, random_state=9)),
    ("c7-int", lambda: RandomForestClassifier(n_estimators=100, bootstrap=False, random_state=10)),
    ("c7-str", lambda: ExtraTreesClassifier(n_estimators=1, random_state=11)),
    ("c7-str", lambda: RandomForestClassifier(n_estimators=7, max_depth=3, random_state=12)),
    ("c7-int", lambda: ExtraTreesClassifier(n_estimators=7, bootstrap=True, random_state=13)),
]


@cache
def fitted_forest(case: int) -> tuple[Any, np.ndarray]:
    name, build = FOREST_CASES[case]
    features, labels = dataset(name)
    return build().fit(features, labels), features


@pytest.mark.parametrize("case", range(len(FOREST_CASES)))
@pytest.mark.parametrize("n_rows", BATCH_SIZES)
def test_compiled_forest_matches_sklearn(case: int, n_rows: int) -> None:
    estimator, features = fitted_forest(case)
    compiled = CompiledForest.compile(estimator)
    assert compiled is not None
    assert np.array_equal(compiled.classes_, estimator.classes_)
    assert compiled.n_features_in_ == estimator.n_features_in_
    rows = probe_rows(features, estimator, n_rows, seed=case * 1000 + n_rows)
    assert_same_as_sklearn(
        estimator.predict_proba(rows),
        estimator.predict(rows),
        compiled.predict_proba(rows),
        compiled.predict(rows),
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: RandomForestClassifier(n_estimators=30, random_state=0),
        lambda: ExtraTreesClassifier(n_estimators=30, random_state=0),
        lambda: DecisionTreeClassifier(random_state=0),
    ],
)
@pytest.mark.parametrize("nan_in_training", [False, True])
def test_compiled_forest_routes_nan_like_sklearn(
    build: Callable[[], Any], nan_in_training: bool
) -> None:
    features, labels = dataset("c3-int")
    features = features.copy()
    if nan_in_training:
        features[np.random.default_rng(0).random(features.shape) < 0.2] = np.nan
    estimator = build().fit(features, labels)
    compiled = CompiledForest.compile(estimator)
    assert compiled is not None
    for n_rows in BATCH_SIZES:
        rows = probe_rows(features, estimator, n_rows, seed=n_rows, nan_share=0.3)
        assert_same_as_sklearn(
            estimator.predict_proba(rows),
            estimator.predict(rows),
            compiled.predict_proba(rows),
            compiled.predict(rows),
        )


def test_compiled_forest_ignores_monotonic_constraints_at_prediction() -> None:
    features, labels = dataset("c2-int")
    estimator = RandomForestClassifier(
        n_estimators=20, monotonic_cst=[1, -1, 0, 0, 1, 0], random_state=0
    ).fit(features, labels)
    compiled = CompiledForest.compile(estimator)
    assert compiled is not None
    rows = probe_rows(features, estimator, 200, seed=1)
    assert np.array_equal(compiled.predict_proba(rows), estimator.predict_proba(rows))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 1e39])
def test_compiled_forest_refuses_infinite_and_float32_overflow(bad: float) -> None:
    estimator, _ = fitted_forest(0)
    compiled = CompiledForest.compile(estimator)
    assert compiled is not None
    rows = np.array([[5.0, 3.0, 1.5, bad]])
    with pytest.raises(ValueError, match="infinity"):
        compiled.predict_proba(rows)


@pytest.mark.parametrize("shape", [(0, 4), (1, 3), (4,), (1, 5)])
def test_compiled_forest_refuses_wrong_shapes(shape: tuple[int, ...]) -> None:
    estimator, _ = fitted_forest(0)
    compiled = CompiledForest.compile(estimator)
    assert compiled is not None
    with pytest.raises(ValueError, match="4 columns"):
        compiled.predict_proba(np.zeros(shape))


class MyForest(RandomForestClassifier):
    """A subclass may change predict_proba: it is not compiled."""


def fitted(estimator: Any) -> Any:
    return estimator.fit(*dataset("iris"))


@pytest.mark.parametrize(
    "build",
    [
        lambda: RandomForestClassifier(n_estimators=3),  # not fitted
        lambda: DecisionTreeClassifier(),  # not fitted
        lambda: fitted(LogisticRegression(max_iter=500)),
        lambda: fitted(GradientBoostingClassifier(n_estimators=3)),
        lambda: fitted(HistGradientBoostingClassifier(max_iter=3)),
        lambda: fitted(MyForest(n_estimators=3)),
        lambda: "random_forest",
        lambda: None,
    ],
    ids=["unfitted-forest", "unfitted-tree", "logistic", "gb", "hgb", "subclass", "str", "none"],
)
def test_compiled_forest_returns_none_for_unsupported(build: Callable[[], Any]) -> None:
    assert CompiledForest.compile(build()) is None


def test_compiled_forest_returns_none_for_multi_output() -> None:
    features, labels = dataset("c3-int")
    two_targets = np.column_stack([labels, labels[::-1]])
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(features, two_targets)
    assert CompiledForest.compile(forest) is None
    tree = DecisionTreeClassifier(random_state=0).fit(features, two_targets)
    assert CompiledForest.compile(tree) is None


# ---------------------------------------------------------------------------------------------
# CompiledPipeline
# ---------------------------------------------------------------------------------------------

PIPELINE_CASES: list[tuple[str, bool, Callable[[], Any]]] = [
    ("iris", False, lambda: RandomForestClassifier(n_estimators=100, random_state=0)),
    ("iris", True, lambda: ExtraTreesClassifier(n_estimators=100, random_state=0)),
    ("c2-str", True, lambda: RandomForestClassifier(n_estimators=1, random_state=1)),
    ("c2-int", False, lambda: ExtraTreesClassifier(n_estimators=7, max_depth=3, random_state=2)),
    (
        "c3-int",
        True,
        lambda: RandomForestClassifier(n_estimators=7, bootstrap=False, random_state=4),
    ),
    (
        "c3-str",
        False,
        lambda: RandomForestClassifier(n_estimators=100, max_depth=3, random_state=5),
    ),
    ("c7-str", True, lambda: RandomForestClassifier(n_estimators=100, random_state=3)),
    ("c7-int", False, lambda: ExtraTreesClassifier(n_estimators=7, bootstrap=True, random_state=6)),
]


def numeric_pipeline(
    columns: list[str], model: Any, *, scale: bool, strategy: str = "median"
) -> Pipeline:
    """The shape ML/training.py builds for an all-numeric dataset."""
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=strategy))]
    if scale:
        steps.append(("scale", StandardScaler()))
    preprocess = ColumnTransformer([("numeric", Pipeline(steps), columns)], remainder="drop")
    return Pipeline([("preprocess", preprocess), ("classifier", model)])


def training_frame(name: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The dataset as a frame with some cells missing and a text column no branch reads."""
    features, labels = dataset(name)
    features = features.copy()
    features[np.random.default_rng(seed).random(features.shape) < 0.1] = np.nan
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
    frame.insert(1, "note", "ignored")  # dropped by remainder="drop"
    return frame, labels


@cache
def fitted_pipeline(case: int) -> tuple[Pipeline, pd.DataFrame]:
    name, scale, build = PIPELINE_CASES[case]
    frame, labels = training_frame(name, seed=case)
    numeric = [column for column in frame.columns if column != "note"]
    # Listing the columns out of frame order checks that each value lands in its column.
    pipeline = numeric_pipeline(numeric[::-1], build(), scale=scale)
    return pipeline.fit(frame, labels), frame


def raw_probe_rows(pipeline: Pipeline, frame: pd.DataFrame, n_rows: int, seed: int) -> np.ndarray:
    """Raw rows (in frame column order) that land at and around the forest's thresholds."""
    fast = CompiledPipeline.compile(pipeline)
    assert fast is not None
    preprocessed = pipeline[:-1].transform(frame)
    rows = probe_rows(preprocessed, pipeline[-1], n_rows, seed, nan_share=NAN_SHARE)
    # Undo the scaler (when there is one) so the raw values map back near the thresholds.
    numeric = pipeline[0].transformers_[0][1]
    if "scale" in numeric.named_steps:
        scaler = numeric.named_steps["scale"]
        rows = rows * scaler.scale_ + scaler.mean_
    by_name = dict(zip(pipeline[0].transformers_[0][2], rows.T, strict=True))
    return np.column_stack([by_name[name] for name in fast.feature_names])


def sklearn_frame(rows: np.ndarray, feature_names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=feature_names)
    frame.insert(1, "note", "ignored")
    return frame


@pytest.mark.parametrize("case", range(len(PIPELINE_CASES)))
@pytest.mark.parametrize("n_rows", BATCH_SIZES)
def test_fast_pipeline_matches_sklearn(case: int, n_rows: int) -> None:
    pipeline, frame = fitted_pipeline(case)
    fast = CompiledPipeline.compile(pipeline)
    assert fast is not None
    assert fast.feature_names == [column for column in frame.columns if column != "note"]
    assert np.array_equal(fast.classes_, pipeline.classes_)
    rows = raw_probe_rows(pipeline, frame, n_rows, seed=case * 1000 + n_rows)
    assert np.isnan(rows).any() or n_rows < 10
    expected = sklearn_frame(rows, fast.feature_names)
    assert_same_as_sklearn(
        pipeline.predict_proba(expected),
        pipeline.predict(expected),
        fast.predict_proba(rows),
        fast.predict(rows),
    )


@pytest.mark.parametrize(
    "numeric_steps",
    [
        [SimpleImputer(strategy="mean")],
        [SimpleImputer(), StandardScaler(with_mean=False)],
        [SimpleImputer(strategy="median"), StandardScaler(with_std=False)],
        [SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()],
        [StandardScaler(), SimpleImputer(strategy="median")],
    ],
    ids=["mean", "no-centering", "no-scaling", "keep-empty", "scale-then-impute"],
)
def test_fast_pipeline_matches_sklearn_imputer_and_scaler_options(
    numeric_steps: list[Any],
) -> None:
    frame, labels = training_frame("c3-str", seed=0)
    if any(getattr(step, "keep_empty_features", False) for step in numeric_steps):
        frame["f5"] = np.nan  # all missing in training: imputed as 0
    numeric = [column for column in frame.columns if column != "note"]
    steps = [(f"step{index}", step) for index, step in enumerate(numeric_steps)]
    preprocess = ColumnTransformer([("numeric", Pipeline(steps), numeric)])
    model = RandomForestClassifier(n_estimators=20, random_state=0)
    pipeline = Pipeline([("prep", preprocess), ("forest", model)]).fit(frame, labels)
    fast = CompiledPipeline.compile(pipeline)
    assert fast is not None
    rng = np.random.default_rng(0)
    rows = frame[fast.feature_names].to_numpy(np.float64)[rng.integers(0, len(frame), 500)]
    rows = rows + rng.choice([0.0, 0.25, -0.5], size=rows.shape)
    rows[rng.random(rows.shape) < NAN_SHARE] = np.nan
    expected = sklearn_frame(rows, fast.feature_names)
    assert_same_as_sklearn(
        pipeline.predict_proba(expected),
        pipeline.predict(expected),
        fast.predict_proba(rows),
        fast.predict(rows),
    )


def test_fast_pipeline_reads_several_numeric_branches_and_a_bare_imputer() -> None:
    frame, labels = training_frame("c7-int", seed=1)
    preprocess = ColumnTransformer(
        [
            ("scaled", Pipeline([("i", SimpleImputer()), ("s", StandardScaler())]), ["f4", "f0"]),
            ("plain", SimpleImputer(strategy="median"), ["f1", "f2", "f3", "f5"]),
            ("unused", "drop", ["note"]),
        ]
    )
    model = ExtraTreesClassifier(n_estimators=7, random_state=0)
    pipeline = Pipeline([("p", preprocess), ("m", model)]).fit(frame, labels)
    fast = CompiledPipeline.compile(pipeline)
    assert fast is not None
    assert fast.feature_names == ["f0", "f1", "f2", "f3", "f4", "f5"]
    rng = np.random.default_rng(1)
    rows = frame[fast.feature_names].to_numpy(np.float64)[rng.integers(0, len(frame), 300)]
    rows[rng.random(rows.shape) < NAN_SHARE] = np.nan
    expected = sklearn_frame(rows, fast.feature_names)
    assert_same_as_sklearn(
        pipeline.predict_proba(expected),
        pipeline.predict(expected),
        fast.predict_proba(rows),
        fast.predict(rows),
    )


def unsupported_pipelines() -> dict[str, Callable[[list[str]], Pipeline]]:
    forest = RandomForestClassifier(n_estimators=3, random_state=0)

    def impute(**options: Any) -> Pipeline:
        return Pipeline([("impute", SimpleImputer(**options))])

    def columns(branch: Any, numeric: list[str], **options: Any) -> ColumnTransformer:
        return ColumnTransformer([("numeric", branch, numeric)], **options)

    return {
        "one-hot-branch": lambda c: Pipeline(
            [
                (
                    "preprocess",
                    ColumnTransformer(
                        [
                            ("numeric", impute(strategy="median"), c),
                            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["note"]),
                        ]
                    ),
                ),
                ("model", forest),
            ]
        ),
        "most-frequent": lambda c: numeric_pipeline(
            c, forest, scale=False, strategy="most_frequent"
        ),
        "constant": lambda c: numeric_pipeline(c, forest, scale=False, strategy="constant"),
        "indicator": lambda c: Pipeline(
            [("p", columns(impute(strategy="median", add_indicator=True), c)), ("m", forest)]
        ),
        "missing-is-minus-one": lambda c: Pipeline(
            [("p", columns(impute(strategy="median", missing_values=-1.0), c)), ("m", forest)]
        ),
        "remainder-passthrough": lambda c: Pipeline(
            [("p", columns(impute(), c[:-1], remainder="passthrough")), ("m", forest)]
        ),
        "transformer-weights": lambda c: Pipeline(
            [("p", columns(impute(), c, transformer_weights={"numeric": 2.0})), ("m", forest)]
        ),
        "no-column-transformer": lambda c: Pipeline([("m", forest)]),
        "extra-step": lambda c: Pipeline(
            [("p", columns(impute(), c)), ("s", StandardScaler()), ("m", forest)]
        ),
    }


@pytest.mark.parametrize("kind", sorted(unsupported_pipelines()))
def test_fast_pipeline_returns_none_for_unsupported(kind: str) -> None:
    frame, labels = training_frame("c3-int", seed=0)
    numeric = [column for column in frame.columns if column != "note"]
    pipeline = unsupported_pipelines()[kind](numeric)
    fit_frame = frame if kind == "one-hot-branch" else frame.fillna(0.0).drop(columns="note")
    if kind == "remainder-passthrough":
        fit_frame = frame.drop(columns="note")
    pipeline.fit(fit_frame, labels)
    assert CompiledPipeline.compile(pipeline) is None


def test_fast_pipeline_compiles_other_classifiers_behind_its_preprocessing() -> None:
    """Boosting, linear models and kNN are compiled (their own test files), anything else is
    called as is (LibraryModel)."""
    frame, labels = training_frame("c3-int", seed=0)
    numeric = [column for column in frame.columns if column != "note"]
    fit_frame = frame.drop(columns="note")
    for model, kind in [
        (HistGradientBoostingClassifier(max_iter=3), "CompiledHistGradientBoosting"),
        (GradientBoostingClassifier(n_estimators=3), "CompiledGradientBoosting"),
        (LogisticRegression(max_iter=500), "CompiledLogisticRegression"),
        (KNeighborsClassifier(), "CompiledKNeighbors"),
        (KNeighborsClassifier(weights="distance"), "LibraryModel"),
    ]:
        pipeline = numeric_pipeline(numeric, model, scale=True).fit(fit_frame, labels)
        fast = CompiledPipeline.compile(pipeline)
        assert fast is not None
        assert type(fast.model).__name__ == kind


def test_fast_pipeline_returns_none_when_unfitted_or_not_a_pipeline() -> None:
    model = RandomForestClassifier(n_estimators=3)
    assert CompiledPipeline.compile(numeric_pipeline(["f0"], model, scale=False)) is None
    assert CompiledPipeline.compile(fitted_forest(0)[0]) is None
    assert CompiledPipeline.compile(None) is None


def test_fast_pipeline_refuses_infinity_and_wrong_shapes() -> None:
    pipeline, _ = fitted_pipeline(0)
    fast = CompiledPipeline.compile(pipeline)
    assert fast is not None
    width = len(fast.feature_names)
    with pytest.raises(ValueError, match="infinity"):
        fast.predict_proba(np.full((1, width), np.inf))
    for shape in [(0, width), (2, width + 1), (width,)]:
        with pytest.raises(ValueError, match=f"{width} columns"):
            fast.predict(np.zeros(shape))
