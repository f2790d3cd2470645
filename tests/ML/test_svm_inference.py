"""Tests for ML/svm_inference.py: the calibrated SVC gives scikit-learn's labels and
probabilities bit for bit, or is not compiled."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import _ovr_decision_function

from ML.forest_inference import compile_model
from ML.svm_inference import CompiledCalibratedSVC, _OneVsRest
from tests.ML.test_boosting_inference import assert_pipeline_matches, ten_classes, trained_on_frame
from tests.ML.test_forest_inference import BATCH_SIZES, assert_same_as_sklearn, dataset

KERNELS = ("rbf", "linear", "poly", "sigmoid")
DATASETS = ("iris", "c2-str", "c3-int", "c7-int", "c10")


def calibrated(svc: Any, **options: Any) -> CalibratedClassifierCV:
    """The registry's wrapping (ML/estimators.py), options overridden."""
    settings = {"method": "sigmoid", "cv": 5, "ensemble": False, **options}
    return CalibratedClassifierCV(svc, **settings)


@cache
def scaled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A dataset standardised, as the registry's pipeline feeds the SVC."""
    features, labels = ten_classes() if name == "c10" else dataset(name)
    return StandardScaler().fit_transform(features), labels


@cache
def fitted(name: str, kernel: str) -> tuple[CalibratedClassifierCV, np.ndarray]:
    features, labels = scaled(name)
    return calibrated(SVC(kernel=kernel, random_state=0)).fit(features, labels), features


def clone_fitted(estimator: Any) -> Any:
    return pickle.loads(pickle.dumps(estimator))


def compiled(estimator: Any) -> CompiledCalibratedSVC:
    model = CompiledCalibratedSVC.compile(estimator)
    assert model is not None
    assert np.array_equal(model.classes_, estimator.classes_)
    assert model.n_features_in_ == estimator.n_features_in_
    return model


def probe_rows(features: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    """Training rows (support vectors among them), the same nudged, and rows far outside."""
    rng = np.random.default_rng(seed)
    rows = features[rng.integers(0, len(features), n_rows)].copy()
    kind = rng.integers(0, 3, n_rows)
    rows[kind == 1] += rng.normal(scale=0.3, size=rows[kind == 1].shape)
    rows[kind == 2] *= rng.choice([-8.0, 5.0, 40.0], size=(int((kind == 2).sum()), 1))
    return rows


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_compiled_calibrated_svc_matches_sklearn(name: str, kernel: str) -> None:
    estimator, features = fitted(name, kernel)
    model = compiled(estimator)
    svc = estimator.calibrated_classifiers_[0].estimator
    for n_rows in BATCH_SIZES:
        rows = probe_rows(features, n_rows, seed=n_rows)
        for layout in (np.ascontiguousarray(rows), np.asfortranarray(rows)):
            labels, proba = model.predict_with_proba(layout)
            assert_same_as_sklearn(
                estimator.predict_proba(layout), estimator.predict(layout), proba, labels
            )
            assert np.array_equal(model.decision_function(layout), svc.decision_function(layout))


def test_compiled_calibrated_svc_gives_the_uniform_row_when_every_calibrator_says_zero() -> None:
    """sklearn's edge case: all calibrated scores 0 (here a calibrator shifted far, on a fitted
    copy) gives 1 / n_classes per class, not 0 / 0."""
    estimator = clone_fitted(fitted("c3-int", "rbf")[0])
    calibrators = estimator.calibrated_classifiers_[0].calibrators
    for calibrator in calibrators:
        calibrator.b_ = 800.0
    # Class 0's probability is 0 where its one-vs-rest score is below ~0.25 (no vote), else not.
    calibrators[0].a_, calibrators[0].b_ = -1000.0, 1000.0
    rows = probe_rows(scaled("c3-int")[0], 200, seed=0)
    expected = estimator.predict_proba(rows)
    assert (expected == 1 / 3).all(axis=1).any() and not (expected == 1 / 3).all()
    labels, proba = compiled(estimator).predict_with_proba(rows)
    assert_same_as_sklearn(expected, estimator.predict(rows), proba, labels)


def test_one_vs_rest_scores_match_sklearns_for_any_class_count() -> None:
    rng = np.random.default_rng(0)
    for n_classes in range(3, 13):
        pairs = n_classes * (n_classes - 1) // 2
        dec = rng.normal(size=(40, pairs)) * rng.choice([1e-3, 1.0, 1e3], size=(40, 1))
        dec[rng.random(dec.shape) < 0.1] = 0.0
        dec[rng.random(dec.shape) < 0.05] = -0.0
        expected = _ovr_decision_function(dec < 0, -dec, n_classes)
        scores = _OneVsRest(n_classes).decision_function(dec)
        assert np.array_equal(scores, expected)
        assert np.array_equal(np.signbit(scores), np.signbit(expected))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_compiled_calibrated_svc_refuses_what_sklearn_refuses(bad: float) -> None:
    estimator, _ = fitted("iris", "rbf")
    rows = np.array([[0.5, 0.1, bad, 0.2]])
    with pytest.raises(ValueError):
        estimator.predict_proba(rows)
    with pytest.raises(ValueError, match=r"infinity|NaN"):
        compiled(estimator).predict_with_proba(rows)


@pytest.mark.parametrize("shape", [(0, 4), (1, 3), (4,), (1, 5)])
def test_compiled_calibrated_svc_refuses_wrong_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="4 columns"):
        compiled(fitted("iris", "rbf")[0]).predict_with_proba(np.zeros(shape))


class MySVC(SVC):
    """A subclass may change decision_function: it is not compiled."""


class MyCalibrated(CalibratedClassifierCV):
    """Likewise for predict_proba."""


def iris_fit(estimator: Any) -> Any:
    return estimator.fit(*scaled("iris"))


UNSUPPORTED: dict[str, Callable[[], Any]] = {
    "unfitted": lambda: calibrated(SVC()),
    "isotonic": lambda: iris_fit(calibrated(SVC(), method="isotonic")),
    "temperature": lambda: iris_fit(calibrated(SVC(), method="temperature")),
    "ensemble": lambda: iris_fit(calibrated(SVC(), ensemble=True)),
    "ovo-shape": lambda: iris_fit(calibrated(SVC(decision_function_shape="ovo"))),
    "precomputed-kernel": lambda: calibrated(SVC(kernel="precomputed")).fit(
        rbf_kernel(scaled("iris")[0]), scaled("iris")[1]
    ),
    "callable-kernel": lambda: iris_fit(calibrated(SVC(kernel=rbf_kernel))),
    "sparse-fit": lambda: calibrated(SVC()).fit(
        sparse.csr_matrix(scaled("iris")[0]), scaled("iris")[1]
    ),
    "svc-subclass": lambda: iris_fit(calibrated(MySVC())),
    "calibrated-subclass": lambda: iris_fit(
        MyCalibrated(SVC(), method="sigmoid", cv=5, ensemble=False)
    ),
    "other-estimator": lambda: iris_fit(calibrated(LogisticRegression(max_iter=500))),
    "bare-svc": lambda: iris_fit(SVC()),
    "none": lambda: None,
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_compiled_calibrated_svc_returns_none_for_unsupported(kind: str) -> None:
    assert CompiledCalibratedSVC.compile(UNSUPPORTED[kind]()) is None


@pytest.mark.parametrize("kind", ["isotonic", "ensemble", "ovo-shape", "bare-svc"])
def test_unsupported_calibrated_svcs_are_served_by_scikit_learn(kind: str) -> None:
    assert type(compile_model(UNSUPPORTED[kind]())).__name__ == "LibraryModel"


# ---------------------------------------------------------------------------------------------
# The registry's svc, trained by ML/training.py, behind CompiledPipeline
# ---------------------------------------------------------------------------------------------


def test_registry_svc_on_ten_classes_with_missing_cells_matches_its_pipeline() -> None:
    """iris and binary sets: test_every_registry_estimator_compiles_and_matches_its_pipeline."""
    pipeline, data = trained_on_frame("svc", *ten_classes(), nan_share=0.1)
    assert_pipeline_matches(pipeline, data, CompiledCalibratedSVC)
