"""Fast, exact inference for a fitted KNeighborsClassifier: its own neighbour search without
its per-call validation and dispatch.

For one row, KNeighborsClassifier.predict validates the row, asks joblib to run the tree query
in a thread pool of one and takes scipy's mode; together they cost many times the search itself.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.metrics._pairwise_distances_reduction import ArgKmin, ArgKminClassMode
from sklearn.neighbors import BallTree, KDTree, KNeighborsClassifier
from sklearn.neighbors._classification import _adjusted_metric
from sklearn.utils import get_tags

from ML.tree_walk import check_finite, float64_rows

_TREES = {"kd_tree": KDTree, "ball_tree": BallTree}


# Up to rows x training rows x features this many, a row's neighbours come from one numpy
# product with a tie check (_clear_cut_neighbours) rather than KDTree.query: 1 MB of float64.
CLEAR_CUT_MAX_ELEMENTS = 1 << 17
# The relative gap between the k-th and the next squared distance that rounding cannot close
# (it moves each by at most (features + 3) * 1.1e-16 relative: 1e-9 covers a million features).
_CLEAR_GAP = 1e-9


class _Search(Enum):
    """How KNeighborsClassifier finds the neighbours for the fit method it chose."""

    TREE = "the KDTree's or BallTree's own query"
    CLASS_MODE = "brute force, neighbours and votes in the ArgKminClassMode reduction"
    ARGKMIN = "brute force, neighbours from the ArgKmin reduction"


class CompiledKNeighbors:
    """KNeighborsClassifier(weights="uniform")'s labels and probabilities, bit for bit.

    The neighbours come from the structure sklearn chose in fit, called as kneighbors and
    predict_proba call it (a KDTree's or BallTree's own `query`; for brute force the
    ArgKminClassMode or ArgKmin reduction, whichever sklearn picks for the metric), so ties in
    distance (duplicate training rows) pick the same rows. For a few rows on a euclidean
    KDTree, one numpy product finds them instead wherever no tie at the k-th place leaves the
    tree a choice (_clear_cut_neighbours). A class's probability is its count
    among the k neighbours over k, exactly as predict_proba adds ones and divides; the label is
    the most frequent class, the first in classes_ order on a tie, as both scipy's mode
    (predict) and argmax (predict on the class-mode path) choose.
    """

    classes_: np.ndarray
    n_features_in_: int

    def __init__(self, estimator: Any, search: _Search) -> None:
        self.classes_ = estimator.classes_
        self.n_features_in_ = int(estimator.n_features_in_)
        self._search = search
        self._k = int(estimator.n_neighbors)
        self._labels = estimator._y  # each training row's index in classes_
        self._tree = estimator._tree
        self._fit_X = estimator._fit_X
        self._effective_metric = estimator.effective_metric_
        self._effective_metric_params = estimator.effective_metric_params_
        self._metric, self._metric_kwargs = _class_mode_metric(estimator)
        self._has_clear_cut_search = (
            estimator._fit_method == "kd_tree"
            and estimator.effective_metric_ == "euclidean"
            and not self._effective_metric_params
            and self._fit_X.dtype == np.float64
        )

    @classmethod
    def compile(cls, estimator: Any) -> CompiledKNeighbors | None:
        """The compiled model, or None for anything whose predictions it would not reproduce.

        Supported: a fitted single-output KNeighborsClassifier (exact type) with uniform weights
        that refuses NaN, searching with a KDTree or BallTree (any metric they were built with),
        or by brute force where scikit-learn uses one of its pairwise-distance reductions.
        """
        if type(estimator) is not KNeighborsClassifier:
            return None
        method = getattr(estimator, "_fit_method", None)
        classes = getattr(estimator, "classes_", None)
        labels = getattr(estimator, "_y", None)
        fit_X = getattr(estimator, "_fit_X", None)
        n_features = getattr(estimator, "n_features_in_", None)
        if (
            not (isinstance(estimator.weights, str) and estimator.weights == "uniform")
            or getattr(estimator, "outputs_2d_", True)
            or estimator.metric == "precomputed"
            or not isinstance(classes, np.ndarray)
            or classes.ndim != 1
            or len(classes) == 0
            or not isinstance(labels, np.ndarray)
            or labels.ndim != 1
            or labels.dtype.kind not in "iu"
            or not isinstance(fit_X, np.ndarray)
            or not isinstance(n_features, int)
            or fit_X.shape != (len(labels), n_features)
            or not 0 < int(estimator.n_neighbors) <= len(labels)
            # A NaN-aware metric would accept rows this model refuses.
            or get_tags(estimator).input_tags.allow_nan
        ):
            return None
        if method in _TREES:
            if type(getattr(estimator, "_tree", None)) is not _TREES[method]:
                return None
            return cls(estimator, _Search.TREE)
        search = _brute_search(estimator, fit_X) if method == "brute" else None
        return None if search is None else cls(estimator, search)

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) for preprocessed rows (2-D float64, no NaN or infinity)."""
        X = float64_rows(X, self.n_features_in_)
        check_finite(X, allows_nan=False)
        X = np.ascontiguousarray(X)  # validate_data(order="C") in kneighbors
        if self._search is _Search.CLASS_MODE:
            proba = ArgKminClassMode.compute(
                X,
                self._fit_X,
                k=self._k,
                weights="uniform",
                Y_labels=self._labels,
                unique_Y_labels=np.arange(len(self.classes_), dtype=np.intp),
                metric=self._metric,
                metric_kwargs=self._metric_kwargs,
                strategy="parallel_on_X",
            )
        else:
            proba = self._vote_shares(self._labels[self._neighbours(X)])
        return self.classes_.take(np.argmax(proba, axis=1), axis=0), proba

    def _neighbours(self, X: np.ndarray) -> np.ndarray:
        """Indices of each row's k nearest training rows, as kneighbors finds them."""
        if self._search is _Search.TREE:
            if self._has_clear_cut_search and X.size * len(self._labels) <= CLEAR_CUT_MAX_ELEMENTS:
                nearest = self._clear_cut_neighbours(X)
                if nearest is not None:
                    return nearest
            return self._tree.query(X, self._k, return_distance=False)
        return ArgKmin.compute(
            X=X,
            Y=self._fit_X,
            k=self._k,
            metric=self._effective_metric,
            metric_kwargs=self._effective_metric_params,
            strategy="auto",
            return_distance=False,
        )

    def _clear_cut_neighbours(self, X: np.ndarray) -> np.ndarray | None:
        """The k nearest training rows of every row, when for each row the k-th and the next
        squared distances lie further apart than rounding can move them; else None.

        The KDTree's query returns the k rows nearest by its own squared euclidean distances
        (its pruning bounds never exceed them: the same roundings of smaller numbers), and
        differs from another exact search only in which of equally distant rows it keeps at
        the k-th place. With a clear gap there, both find the same k rows. KDTree.query runs
        check_array on every call, which costs a single row several times this product.
        """
        k, n_train = self._k, len(self._labels)
        differences = X[:, np.newaxis, :] - self._fit_X[np.newaxis, :, :]
        squared = np.einsum("ijk,ijk->ij", differences, differences)
        if k == n_train:
            return np.broadcast_to(np.arange(n_train), squared.shape)
        order = np.argpartition(squared, k - 1, axis=1)
        kth = np.take_along_axis(squared, order[:, k - 1 : k], axis=1)[:, 0]
        beyond = np.take_along_axis(squared, order[:, k:], axis=1).min(axis=1)
        # Each squared distance is a sum of non-negative rounded terms: within
        # (n_features + 3) * 2**-53 of its value, or 1e-300 near underflow.
        if not (beyond - kth > _CLEAR_GAP * beyond + 1e-300).all():
            return None
        return order[:, :k]

    def _vote_shares(self, neighbour_labels: np.ndarray) -> np.ndarray:
        """Each class's count among the row's neighbours over their number: integer counts are
        exact, so this equals predict_proba's one-by-one additions and division to the bit."""
        n_rows, n_classes = neighbour_labels.shape[0], len(self.classes_)
        cells = neighbour_labels + (np.arange(n_rows) * n_classes)[:, np.newaxis]
        counts = np.bincount(cells.ravel(), minlength=n_rows * n_classes)
        proba = counts.reshape((n_rows, n_classes)).astype(np.float64)
        proba /= proba.sum(axis=1)[:, np.newaxis]
        return proba


def _class_mode_metric(estimator: Any) -> tuple[Any, dict[str, Any]]:
    """The metric and its arguments predict_proba gives ArgKminClassMode (minkowski with p=2
    becomes euclidean), without editing the estimator's metric_params as sklearn does."""
    return _adjusted_metric(
        metric=estimator.metric, metric_kwargs=dict(estimator.metric_params or {}), p=estimator.p
    )


def _brute_search(estimator: Any, fit_X: np.ndarray) -> _Search | None:
    """Which reduction KNeighborsClassifier runs on float64 rows when it searches by brute
    force, or None when it runs neither (then it computes pairwise distances in Python)."""
    if fit_X.dtype != np.float64 or not fit_X.flags.c_contiguous:
        return None
    if not get_config().get("enable_cython_pairwise_dist", True):
        return None
    probe = np.zeros((1, fit_X.shape[1]))
    metric, _ = _class_mode_metric(estimator)
    # predict tests the metric as given, predict_proba as adjusted; both must agree.
    if ArgKminClassMode.is_usable_for(probe, fit_X, metric):
        if ArgKminClassMode.is_usable_for(probe, fit_X, estimator.metric):
            return _Search.CLASS_MODE
        return None
    if ArgKmin.is_usable_for(probe, fit_X, estimator.effective_metric_):
        return _Search.ARGKMIN
    return None
