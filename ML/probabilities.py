"""Class probabilities from decision functions, computed exactly as scikit-learn computes them."""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def sigmoid_pair(score: np.ndarray) -> np.ndarray:
    """(rows, 2) probabilities [1 - p, p], p = expit(score) for a 1-D score: sklearn's binary
    HalfBinomialLoss.predict_proba and LogisticRegression's `_predict_proba_lr`."""
    proba = np.empty((score.shape[0], 2), dtype=np.float64)
    proba[:, 1] = expit(score)
    proba[:, 0] = 1 - proba[:, 1]
    return proba


def softmax(raw: np.ndarray) -> np.ndarray:
    """sklearn.utils.extmath.softmax(raw, copy=True), step for step, without its array-API
    dispatch (which costs more than the arithmetic for one row). The copy keeps raw's layout,
    so the row sums add in the same order as sklearn's."""
    proba = raw.copy(order="K")
    proba -= np.max(proba, axis=1).reshape((-1, 1))
    np.exp(proba, out=proba)
    proba /= np.sum(proba, axis=1).reshape((-1, 1))
    return proba
