"""Fast, exact inference for an SVC inside CalibratedClassifierCV(method="sigmoid",
ensemble=False): libsvm's decision function and the Platt calibrators without the per-call
validation.

For one row, CalibratedClassifierCV.predict_proba validates the row three times (its own
array-API dispatch, SVC's validate_data, check_array before libsvm) and encodes the classes
again with a fresh LabelEncoder; that costs several times the kernel sums themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
from sklearn.preprocessing import LabelEncoder
from sklearn.svm import SVC, _libsvm

from ML.tree_walk import check_finite, float64_rows

# The kernels libsvm computes itself from the fitted attributes (tests/ML/test_svm_inference.py
# checks each); "precomputed" and callables need the kernel matrix built in Python.
_KERNELS = ("linear", "poly", "rbf", "sigmoid")
# CalibratedClassifierCV's clip of probabilities that round just above one.
_ONE_PLUS = 1.0 + 1e-5


class CompiledCalibratedSVC:
    """CalibratedClassifierCV(SVC, method="sigmoid", ensemble=False)'s labels and probabilities,
    bit for bit.

    The decision function is sklearn.svm._libsvm.decision_function called with the fitted
    attributes, as SVC._dense_decision_function calls it (sign flipped for two classes, the
    one-vs-one scores turned into sklearn's one-vs-rest ones for more); then each class's
    sigmoid expit(-(a * score + b)), the normalisation and the clip of
    _CalibratedClassifier.predict_proba; labels are the argmax, as CalibratedClassifierCV.predict
    gives them.
    """

    classes_: np.ndarray
    n_features_in_: int

    def __init__(self, calibrated: Any, svc: SVC) -> None:
        self.classes_ = calibrated.classes_
        self.n_features_in_ = int(calibrated.n_features_in_)
        self._svc = svc
        pipeline = calibrated.calibrated_classifiers_[0]
        # _CalibratedClassifier.predict_proba encodes the SVC's classes among all classes on
        # every call; they do not change.
        # (zip with the calibrators keeps as many as there are score columns.)
        indices = LabelEncoder().fit(pipeline.classes).transform(svc.classes_)
        indices = indices[: len(pipeline.calibrators)]
        if len(self.classes_) == 2:
            indices = indices + 1  # one score, for classes_[1]
        self._columns = indices
        # Each a_ * score + b_ is its own multiply and add, vectorised or not.
        self._a = np.array([calibrator.a_ for calibrator in pipeline.calibrators], np.float64)
        self._b = np.array([calibrator.b_ for calibrator in pipeline.calibrators], np.float64)
        self._ovr = _OneVsRest(len(self.classes_))

    @classmethod
    def compile(cls, estimator: Any) -> CompiledCalibratedSVC | None:
        """The compiled model, or None for anything whose predictions it would not reproduce.

        Supported: CalibratedClassifierCV with method="sigmoid" and one calibrated classifier
        (ensemble=False), around a dense-fitted SVC (exact types) with a linear, poly, rbf or
        sigmoid kernel and decision_function_shape="ovr", on two or more classes.
        """
        if type(estimator) is not CalibratedClassifierCV or estimator.method != "sigmoid":
            return None
        pipelines = getattr(estimator, "calibrated_classifiers_", None)
        classes = getattr(estimator, "classes_", None)
        if (
            not isinstance(pipelines, list)
            or len(pipelines) != 1
            or not isinstance(classes, np.ndarray)
            or classes.ndim != 1
            or len(classes) < 2
            or not isinstance(getattr(estimator, "n_features_in_", None), int)
        ):
            return None
        pipeline = pipelines[0]
        if (
            type(pipeline) is not _CalibratedClassifier
            or pipeline.method != "sigmoid"
            or not np.array_equal(pipeline.classes, classes)
        ):
            return None
        svc = pipeline.estimator
        if not _is_usable_svc(svc, classes, estimator.n_features_in_):
            return None
        # One calibrator per score column: one for two classes, else one per class.
        scores = 1 if len(classes) == 2 else len(classes)
        calibrators = pipeline.calibrators
        if len(calibrators) != scores or not all(
            type(calibrator) is _SigmoidCalibration for calibrator in calibrators
        ):
            return None
        return cls(estimator, svc)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """SVC.decision_function for checked rows: (rows,) for two classes, else (rows, classes)."""
        svc = self._svc
        scores = _libsvm.decision_function(
            np.ascontiguousarray(X),  # check_array(order="C") in _dense_decision_function
            svc.support_,
            svc.support_vectors_,
            svc._n_support,
            svc._dual_coef_,
            svc._intercept_,
            svc._probA,
            svc._probB,
            svm_type=0,  # LIBSVM_IMPL.index("c_svc")
            kernel=svc.kernel,
            degree=svc.degree,
            cache_size=svc.cache_size,
            coef0=svc.coef0,
            gamma=svc._gamma,
        )
        if len(self.classes_) == 2:
            return -scores.ravel()
        return self._ovr.decision_function(scores)

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) for preprocessed rows (2-D float64, no NaN or infinity);
        the labels come from the probabilities, so both are always computed."""
        X = float64_rows(X, self.n_features_in_)
        check_finite(X, allows_nan=False)
        proba = self.predict_proba(X)
        return self.classes_.take(np.argmax(proba, axis=1), axis=0), proba

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for checked rows, columns in classes_ order."""
        scores = self.decision_function(X).reshape((X.shape[0], -1))
        n_classes = len(self.classes_)
        proba = np.zeros((X.shape[0], n_classes))
        proba[:, self._columns] = expit(-(self._a * scores + self._b))
        if n_classes == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
        else:
            denominator = np.sum(proba, axis=1)[:, np.newaxis]
            uniform = np.full_like(proba, 1 / n_classes)
            proba = np.divide(proba, denominator, out=uniform, where=denominator != 0)
        proba[(proba > 1.0) & (proba <= _ONE_PLUS)] = 1.0
        # CalibratedClassifierCV then averages over its one calibrated classifier: 0 + p, / 1,
        # which changes no bit (these probabilities are never -0.0).
        return proba


def _is_usable_svc(svc: Any, classes: np.ndarray, n_features: int) -> bool:
    if (
        type(svc) is not SVC
        or getattr(svc, "_impl", None) != "c_svc"
        or getattr(svc, "_sparse", True)
        or not (isinstance(svc.kernel, str) and svc.kernel in _KERNELS)
        or svc.decision_function_shape != "ovr"
        or getattr(svc, "n_features_in_", None) != n_features
        or not isinstance(svc_classes := getattr(svc, "classes_", None), np.ndarray)
        or not np.array_equal(svc_classes, classes)
    ):
        return False
    vectors = getattr(svc, "support_vectors_", None)
    n_support = getattr(svc, "_n_support", None)
    # What _validate_for_predict checks (CVE-2020-28975), once rather than per call.
    return bool(
        isinstance(vectors, np.ndarray)
        and vectors.dtype == np.float64
        and vectors.ndim == 2
        and vectors.shape[1] == n_features
        and isinstance(n_support, np.ndarray)
        and n_support.sum() == vectors.shape[0]
    )


class _OneVsRest:
    """sklearn.utils.multiclass._ovr_decision_function(dec < 0, -dec, n_classes), bit for bit,
    with the loop over class pairs done once here rather than in numpy calls per pair.

    sklearn adds each pair's confidence to its two classes' sums in pair order, starting from
    zero; every class is in n_classes - 1 pairs, so each sum is n_classes - 1 additions in
    that order, done here for all classes at once. Votes are small integers: exact in any order.
    """

    def __init__(self, n_classes: int) -> None:
        pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
        # For class c, the pairs it is in, in pair order, and whether it is their first class.
        self._pairs = np.array(
            [[k for k, pair in enumerate(pairs) if c in pair] for c in range(n_classes)],
            dtype=np.intp,
        ).reshape((n_classes, n_classes - 1))
        is_first = np.array([[pairs[k][0] == c for k in row] for c, row in enumerate(self._pairs)])
        # sklearn subtracts the confidence from the first class's sum, adds it to the second's.
        self._signs = np.where(is_first, -1.0, 1.0)
        self._is_first = is_first

    def decision_function(self, dec: np.ndarray) -> np.ndarray:
        confidences = (-dec)[:, self._pairs] * self._signs  # (rows, classes, pairs per class)
        sums = np.zeros(confidences.shape[:2])
        for term in range(confidences.shape[2]):
            sums = sums + confidences[:, :, term]
        # A pair's vote goes to its first class unless dec < 0 (then to the second).
        wins = (dec < 0)[:, self._pairs] != self._is_first
        votes = wins.sum(axis=2).astype(np.float64)
        return votes + sums / (3 * (np.abs(sums) + 1))
