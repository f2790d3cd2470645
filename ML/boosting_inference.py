"""Fast, exact inference for fitted gradient boosting classifiers (exact and histogram-based).

A boosted model's decision function is a start value plus the leaf values of its trees, added
in order; its probabilities are the sigmoid (binary) or softmax (multiclass) of that sum. For
one row, sklearn's per-call validation and one Cython call per tree cost far more than the
arithmetic, so batches go through the compiled walk over flat node arrays (ML/tree_walk.py,
shared with the compiled forests), which adds the leaves as it goes; GradientBoosting's
largest batches go to sklearn's own code, which is faster there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.preprocessing import OrdinalEncoder
from sklearn.tree import DecisionTreeRegressor

from ML.probabilities import sigmoid_pair, softmax
from ML.tree_walk import (
    CategoricalSplits,
    FlatTrees,
    TreeNodes,
    flatten,
    float32_rounded,
    float64_rows,
    summed_leaves,
)

# From this many rows GradientBoosting's own decision_function (Cython predict_stages, no NaN
# or categorical test) beats the compiled walk: timed against each other on 300 depth-3 trees
# (iris; 5,000 synthetic rows of 20 features), 1,024 rows were faster walked, 4,096 in sklearn.
GRADIENT_BOOSTING_SKLEARN_MIN_ROWS = 2048
_LOSS = "log_loss"  # the loss whose probabilities are sigmoid/softmax of the decision function


class _BoostedTrees:
    """What both boosting families share: trees ordered (class, iteration), start values, link.

    `start` is the decision function before any tree (GradientBoosting's init estimator,
    HistGradientBoosting's baseline), `scale` what each leaf value is multiplied by before it
    is added (GradientBoosting's learning rate; 1 for HistGradientBoosting, whose leaves are
    already shrunk), and `label_at_zero` the class index a binary model predicts when the decision
    function is exactly 0 (sklearn's GradientBoosting says `>= 0`, HistGradientBoosting `> 0`).
    """

    classes_: np.ndarray
    n_features_in_: int

    def __init__(
        self,
        estimator: Any,
        flat: FlatTrees,
        start: np.ndarray,
        scale: float,
        *,
        label_at_zero: int,
        order: Literal["C", "F"],
    ) -> None:
        self.estimator = estimator
        self.classes_ = estimator.classes_
        self.n_features_in_ = int(estimator.n_features_in_)
        self._flat = flat
        self._start = start  # float64 (outputs,)
        self._outputs = len(start)
        self._scale = scale
        self._label_at_zero = label_at_zero
        self._order = order  # the layout sklearn's decision function has: softmax sums along it

    @property
    def n_trees(self) -> int:
        return len(self._flat.roots)

    @property
    def depth(self) -> int:
        return self._flat.depth

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) for preprocessed rows (2-D float64), as sklearn gives them."""
        X = float64_rows(X, self.n_features_in_)
        raw = self.decision_function(X)
        return self.classes_.take(self._class_indices(raw), axis=0), self._probabilities(raw)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_proba(X)[1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_proba(X)[0]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The raw predictions, shape (rows, outputs), in sklearn's memory layout."""
        raise NotImplementedError

    def _summed_leaves(self, X: np.ndarray) -> np.ndarray:
        """start + each tree's (scaled) leaf value, added in iteration order as sklearn adds."""
        # Each term is sklearn's `out += scale * value`: the same product, then the same sum.
        total = summed_leaves(self._flat, X, self._start, self._scale)  # (rows, outputs)
        return np.asarray(total, order=self._order)

    def _class_indices(self, raw: np.ndarray) -> np.ndarray:
        if self._outputs == 1:
            score = raw[:, 0]
            return np.where(score == 0, self._label_at_zero, score > 0).astype(np.intp)
        return np.argmax(raw, axis=1)

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        # What sklearn's HalfBinomialLoss / HalfMultinomialLoss.predict_proba compute.
        if self._outputs == 1:
            return sigmoid_pair(raw[:, 0])
        return softmax(raw)


class CompiledGradientBoosting(_BoostedTrees):
    """GradientBoostingClassifier (log loss) as flat arrays; same labels and probabilities.

    Bit for bit: rows are read as float32 and compared with float64 thresholds as sklearn's
    trees do; the start is the init estimator's (constant) raw prediction, computed by sklearn
    once; each stage adds learning_rate * leaf value in stage order, as `predict_stages` does.
    """

    @classmethod
    def compile(cls, estimator: Any) -> CompiledGradientBoosting | None:
        """The compiled model, or None for anything whose predictions it would not reproduce.

        Supported: a fitted GradientBoostingClassifier (exact type) with loss="log_loss" and
        init None/"zero" or a prior DummyClassifier (constant start values).
        """
        if type(estimator) is not GradientBoostingClassifier or estimator.loss != _LOSS:
            return None
        stages = getattr(estimator, "estimators_", None)
        outputs = getattr(estimator, "n_trees_per_iteration_", None)
        init = getattr(estimator, "init_", None)
        if (
            not isinstance(stages, np.ndarray)
            or stages.ndim != 2
            or stages.shape[0] == 0
            or stages.shape[1] != outputs
            or not _has_classes(estimator)
        ):
            return None
        if not (
            (isinstance(init, str) and init == "zero")
            or (type(init) is DummyClassifier and getattr(init, "strategy", None) == "prior")
        ):
            return None
        trees = [stages[stage, k] for k in range(stages.shape[1]) for stage in range(len(stages))]
        if not all(_is_usable_regression_tree(tree) for tree in trees):
            return None
        n_features = int(estimator.n_features_in_)
        # The start does not depend on the row: ask sklearn for it once, on any row.
        start = estimator._raw_predict_init(np.zeros((1, n_features), dtype=np.float32))[0]
        return cls(
            estimator,
            flatten([TreeNodes.of_tree(tree.tree_) for tree in trees], outputs=stages.shape[1]),
            np.asarray(start, dtype=np.float64),
            float(estimator.learning_rate),
            label_at_zero=1,
            order="C",
        )

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = float32_rounded(X, allows_nan=False)
        if len(X) >= GRADIENT_BOOSTING_SKLEARN_MIN_ROWS:
            raw = self.estimator.decision_function(X.astype(np.float32))
            return np.asarray(raw).reshape(len(X), -1)
        return self._summed_leaves(X)


class CompiledHistGradientBoosting(_BoostedTrees):
    """HistGradientBoostingClassifier (log loss) as flat arrays; same labels and probabilities.

    Bit for bit: rows stay float64 and go left when `x <= num_threshold` (the raw threshold,
    not the bin), NaN goes where `missing_go_to_left` says; categorical columns are encoded as
    the estimator's own preprocessor does (_CategoryCodes) and a categorical node reads the
    code's bit in its bitset (unknown categories count as missing); the baseline prediction
    plus each predictor's leaf value is added in iteration order.
    """

    def __init__(self, *args: Any, codes: _CategoryCodes | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._codes = codes

    @classmethod
    def compile(cls, estimator: Any) -> CompiledHistGradientBoosting | None:
        """The compiled model, or None for anything whose predictions it would not reproduce.

        Supported: a fitted HistGradientBoostingClassifier (exact type), loss="log_loss", fitted
        on a matrix; categorical_features given as column indices or a mask.
        """
        if type(estimator) is not HistGradientBoostingClassifier or estimator.loss != _LOSS:
            return None
        predictors = getattr(estimator, "_predictors", None)
        baseline = getattr(estimator, "_baseline_prediction", None)
        outputs = getattr(estimator, "n_trees_per_iteration_", None)
        if (
            not isinstance(predictors, list)
            or not predictors
            or not isinstance(outputs, int)
            or any(len(iteration) != outputs for iteration in predictors)
            or not isinstance(baseline, np.ndarray)
            or baseline.shape != (1, outputs)
            or not _has_classes(estimator)
        ):
            return None
        codes = _CategoryCodes.of(estimator)
        if codes is None:
            return None
        ordered = [iteration[k] for k in range(outputs) for iteration in predictors]
        categorical = _categorical_splits(estimator, ordered)
        trees = [_predictor_nodes(predictor) for predictor in ordered]
        flat = flatten(trees, categorical, outputs=outputs)
        return cls(
            estimator,
            flat,
            baseline[0].astype(np.float64),
            1.0,
            label_at_zero=0,
            order="F",
            codes=codes or None,
        )

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self._codes is not None:
            X = self._codes.encode(X)
        # sklearn reads infinity as a number here: only NaN is special.
        return self._summed_leaves(X)


@dataclass(frozen=True)
class _CategoryCodes:
    """What HistGradientBoosting's own preprocessor does to categorical columns, by hand.

    Its ColumnTransformer puts the categorical columns first, each value replaced by its
    position among the categories seen in fit (an OrdinalEncoder: exact equality; unknown and
    missing values become NaN, which the trees route as missing), then the other columns.
    """

    order: np.ndarray  # intp: the input column of each column the trees read
    categories: tuple[np.ndarray, ...]  # float64, sorted, no NaN: one per leading column

    @classmethod
    def of(cls, estimator: Any) -> _CategoryCodes | Literal[False] | None:
        """The encoding; False when there is none to do; None when it is not the known shape."""
        preprocessor = getattr(estimator, "_preprocessor", None)
        if preprocessor is None:
            return False
        if type(preprocessor) is not ColumnTransformer:
            return None
        branches = {name: (branch, columns) for name, branch, columns in preprocessor.transformers_}
        encoder, is_categorical = branches.get("encoder", (None, None))
        if (
            type(encoder) is not OrdinalEncoder
            or set(branches) - {"encoder", "numerical", "remainder"}
            or not isinstance(is_categorical, np.ndarray)
            or is_categorical.dtype != bool
            or len(is_categorical) != estimator.n_features_in_
        ):
            return None
        categories = []
        for values in encoder.categories_:
            if values.dtype.kind != "f":
                return None
            categories.append(values[~np.isnan(values)].astype(np.float64))
        order = np.concatenate([np.flatnonzero(is_categorical), np.flatnonzero(~is_categorical)])
        return cls(order.astype(np.intp), tuple(categories))

    def encode(self, X: np.ndarray) -> np.ndarray:
        encoded = X.take(self.order, axis=1)  # a fresh array: safe to edit in place
        for column, categories in enumerate(self.categories):
            values = encoded[:, column]
            if np.isinf(values).any():  # as sklearn's OrdinalEncoder refuses it
                raise ValueError("X contains infinity in a categorical column")
            if not len(categories):
                values[:] = np.nan
                continue
            position = np.minimum(np.searchsorted(categories, values), len(categories) - 1)
            found = categories.take(position) == values  # False for NaN
            encoded[:, column] = np.where(found, position, np.nan)
        return encoded


def _has_classes(estimator: Any) -> bool:
    classes = getattr(estimator, "classes_", None)
    return (
        isinstance(classes, np.ndarray)
        and classes.ndim == 1
        and len(classes) >= 2
        and isinstance(getattr(estimator, "n_features_in_", None), int)
    )


def _is_usable_regression_tree(tree: Any) -> bool:
    nodes = getattr(tree, "tree_", None)
    return (
        type(tree) is DecisionTreeRegressor
        and nodes is not None
        and nodes.n_outputs == 1
        and nodes.value.shape == (nodes.node_count, 1, 1)
    )


def _predictor_nodes(predictor: Any) -> TreeNodes:
    nodes = predictor.nodes
    is_leaf = nodes["is_leaf"].astype(bool)
    return TreeNodes(
        left=np.where(is_leaf, -1, nodes["left"].astype(np.intp)),
        right=np.where(is_leaf, -1, nodes["right"].astype(np.intp)),
        feature=nodes["feature_idx"].astype(np.intp),
        threshold=nodes["num_threshold"].astype(np.float64),
        missing_go_to_left=nodes["missing_go_to_left"].astype(bool),
        value=nodes["value"].astype(np.float64)[:, np.newaxis],
        depth=int(nodes["depth"].max()),
    )


def _categorical_splits(estimator: Any, predictors: list[Any]) -> CategoricalSplits | None:
    """The categorical nodes of all predictors, in the flat node order; None when there are none."""
    flags = [predictor.nodes["is_categorical"].astype(bool) for predictor in predictors]
    if not any(flag.any() for flag in flags):
        return None
    known, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
    # Row 0 of each table is empty: the row of every node that is not categorical.
    left_tables = [np.zeros((1, 8), dtype=np.uint32)]
    left_rows, known_rows = [], []
    offset = 1
    for predictor, is_categorical in zip(predictors, flags, strict=True):
        nodes = predictor.nodes
        bitsets = np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8)
        left_tables.append(bitsets)
        left_rows.append(np.where(is_categorical, nodes["bitset_idx"] + offset, 0))
        mapped = f_idx_map.astype(np.intp).take(nodes["feature_idx"]) + 1
        known_rows.append(np.where(is_categorical, mapped, 0))
        offset += len(bitsets)
    return CategoricalSplits(
        is_categorical=np.concatenate(flags),
        left_row=np.concatenate(left_rows).astype(np.intp),
        left_bitsets=np.concatenate(left_tables),
        known_row=np.concatenate(known_rows).astype(np.intp),
        known_bitsets=np.concatenate(
            [np.zeros((1, 8), dtype=np.uint32), np.asarray(known, dtype=np.uint32)]
        ),
    )
