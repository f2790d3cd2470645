"""Fast, exact inference for fitted LogisticRegression and GaussianNB: their arithmetic
without their per-call validation.

For one row, LogisticRegression.predict spends about a thousand times longer checking its input
(array-API namespace, narwhals frame detection, check_array) than on `X @ coef_.T + intercept_`;
GaussianNB likewise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from ML.probabilities import sigmoid_pair, softmax
from ML.tree_walk import check_finite, float64_rows


class _ClosedFormModel:
    """What both share: fitted-state checks, and the row checks sklearn's validation made."""

    classes_: np.ndarray
    n_features_in_: int

    def __init__(self, estimator: Any) -> None:
        self.classes_ = estimator.classes_
        self.n_features_in_ = int(estimator.n_features_in_)

    @staticmethod
    def _is_fitted(estimator: Any, attributes: tuple[str, ...]) -> bool:
        """classes_ (two or more), n_features_in_, and float64 arrays for `attributes`."""
        classes = getattr(estimator, "classes_", None)
        return (
            isinstance(classes, np.ndarray)
            and len(classes) >= 2
            and isinstance(getattr(estimator, "n_features_in_", None), int)
            and all(
                isinstance(values := getattr(estimator, name, None), np.ndarray)
                and values.dtype == np.float64
                for name in attributes
            )
        )

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) for preprocessed rows (2-D float64, no NaN or infinity)."""
        X = float64_rows(X, self.n_features_in_)
        check_finite(X, allows_nan=False)
        indices, proba = self._decide(X)
        return self.classes_.take(indices, axis=0), proba

    def _decide(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class indices, probabilities)."""
        raise NotImplementedError


class CompiledLogisticRegression(_ClosedFormModel):
    """LogisticRegression's decision function, labels and probabilities, bit for bit.

    The product is the same `X @ coef_.T`, on X as given (CompiledPipeline passes the F order
    ColumnTransformer gives), so BLAS gives the same bits; binary probabilities are
    [1 - expit(s), expit(s)] and multiclass ones the softmax, as LogisticRegression.predict_proba.
    """

    def __init__(self, estimator: Any) -> None:
        super().__init__(estimator)
        self._coef_T = estimator.coef_.T
        self._intercept = estimator.intercept_

    @classmethod
    def compile(cls, estimator: Any) -> CompiledLogisticRegression | None:
        """The compiled model for a fitted LogisticRegression (exact type, dense float64 coef_)."""
        if type(estimator) is not LogisticRegression or not cls._is_fitted(
            estimator, ("coef_", "intercept_")
        ):
            return None
        outputs = 1 if len(estimator.classes_) == 2 else len(estimator.classes_)
        if estimator.coef_.shape != (outputs, estimator.n_features_in_) or (
            estimator.intercept_.shape != (outputs,)
        ):
            return None
        return cls(estimator)

    def _decide(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = X @ self._coef_T + self._intercept
        if scores.shape[1] == 1:
            score = scores.reshape((-1,))
            return (score > 0).astype(np.intp), sigmoid_pair(score)
        return np.argmax(scores, axis=1), softmax(scores)


class CompiledGaussianNB(_ClosedFormModel):
    """GaussianNB's joint log-likelihood, labels and probabilities, bit for bit.

    The same numpy operations in the same order as GaussianNB._joint_log_likelihood and
    predict_log_proba (scikit-learn's own logsumexp), without the per-call validation.
    """

    def __init__(self, estimator: Any) -> None:
        super().__init__(estimator)
        self._theta = estimator.theta_
        self._var = estimator.var_
        # Per class, what does not depend on the row: log prior and the variance term.
        self._constants = [
            (
                np.log(estimator.class_prior_[i]),
                -0.5 * np.sum(np.log(2.0 * np.pi * self._var[i, :])),
            )
            for i in range(len(self.classes_))
        ]

    @classmethod
    def compile(cls, estimator: Any) -> CompiledGaussianNB | None:
        """The compiled model for a fitted GaussianNB (exact type, float64 statistics)."""
        if type(estimator) is not GaussianNB or not cls._is_fitted(
            estimator, ("theta_", "var_", "class_prior_")
        ):
            return None
        shape = (len(estimator.classes_), estimator.n_features_in_)
        if estimator.theta_.shape != shape or estimator.var_.shape != shape:
            return None
        return cls(estimator)

    def _decide(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        joint = []
        for i, (log_prior, variance_term) in enumerate(self._constants):
            n_ij = variance_term - 0.5 * np.sum(
                ((X - self._theta[i, :]) ** 2) / (self._var[i, :]), axis=1
            )
            joint.append(log_prior + n_ij)
        jll = np.stack(joint).T
        return np.argmax(jll, axis=1), np.exp(jll - np.atleast_2d(_logsumexp_rows(jll)).T)


def _logsumexp_rows(array: np.ndarray) -> np.ndarray:
    """sklearn.utils._array_api._logsumexp(array, axis=1) for numpy, step for step."""
    array_max = np.max(array, axis=1, keepdims=True)
    index_max = array == array_max
    array = np.array(array, copy=True)
    array[index_max] = -np.inf
    i_max_dt = index_max.astype(array.dtype)
    m = np.sum(i_max_dt, axis=1, keepdims=True, dtype=array.dtype)
    shift = np.where(np.isfinite(array_max), array_max, 0)
    exp = np.exp(array - shift)
    s = np.sum(exp, axis=1, keepdims=True, dtype=exp.dtype)
    s = np.where(s == 0, s, s / m)
    out = np.log1p(s) + np.log(m) + array_max
    return np.squeeze(out, axis=1)
