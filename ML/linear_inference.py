"""Fast, exact inference for a fitted LogisticRegression: its arithmetic without its validation.

For one row, LogisticRegression.predict spends about a thousand times longer checking its input
(array-API namespace, narwhals frame detection, check_array) than on `X @ coef_.T + intercept_`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from ML.probabilities import sigmoid_pair, softmax
from ML.tree_walk import check_finite, float64_rows


class CompiledLogisticRegression:
    """LogisticRegression's decision function, labels and probabilities, bit for bit.

    The product is the same `X @ coef_.T`, on X as given (CompiledPipeline passes the F order
    ColumnTransformer gives), so BLAS gives the same bits; binary probabilities are
    [1 - expit(s), expit(s)] and multiclass ones the softmax, as LogisticRegression.predict_proba.
    """

    classes_: np.ndarray
    n_features_in_: int

    def __init__(self, estimator: Any) -> None:
        self.classes_ = estimator.classes_
        self.n_features_in_ = int(estimator.n_features_in_)
        self._coef_T = estimator.coef_.T
        self._intercept = estimator.intercept_

    @classmethod
    def compile(cls, estimator: Any) -> CompiledLogisticRegression | None:
        """The compiled model for a fitted LogisticRegression (exact type, dense float64 coef_)."""
        if type(estimator) is not LogisticRegression:
            return None
        coef = getattr(estimator, "coef_", None)
        intercept = getattr(estimator, "intercept_", None)
        classes = getattr(estimator, "classes_", None)
        n_features = getattr(estimator, "n_features_in_", None)
        if (
            not isinstance(coef, np.ndarray)
            or not isinstance(intercept, np.ndarray)
            or not isinstance(classes, np.ndarray)
            or not isinstance(n_features, int)
            or coef.dtype != np.float64
            or intercept.dtype != np.float64
            or len(classes) < 2
            or coef.shape != (1 if len(classes) == 2 else len(classes), n_features)
            or intercept.shape != (coef.shape[0],)
        ):
            return None
        return cls(estimator)

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) for preprocessed rows (2-D float64, no NaN or infinity)."""
        X = float64_rows(X, self.n_features_in_)
        check_finite(X, allows_nan=False)
        scores = X @ self._coef_T + self._intercept
        if scores.shape[1] == 1:
            score = scores.reshape((-1,))
            indices = (score > 0).astype(np.intp)
            proba = sigmoid_pair(score)
        else:
            indices = np.argmax(scores, axis=1)
            proba = softmax(scores)
        return self.classes_.take(indices, axis=0), proba
