"""Fast, exact inference for fitted tree ensembles and the numeric pipelines that feed them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier
from sklearn.utils import get_tags

from ML.boosting_inference import CompiledGradientBoosting, CompiledHistGradientBoosting
from ML.linear_inference import CompiledGaussianNB, CompiledLogisticRegression
from ML.neighbors_inference import CompiledKNeighbors
from ML.svm_inference import CompiledCalibratedSVC
from ML.tree_walk import (
    FlatTrees,
    TreeNodes,
    check_finite,
    flatten,
    float32_rounded,
    float64_rows,
    summed_leaves,
)

# Exact types, not isinstance: a subclass may override predict_proba and we would silently
# serve something else.
_FORESTS = (RandomForestClassifier, ExtraTreesClassifier)
_TREES = (DecisionTreeClassifier, ExtraTreeClassifier)
_IMPUTER_STRATEGIES = ("mean", "median")  # their transform is "NaN -> statistics_", nothing else


class CompiledForest:
    """RandomForestClassifier / ExtraTreesClassifier (or one DecisionTreeClassifier) as flat arrays.

    Gives the same probabilities as scikit-learn bit for bit: each row goes down each tree
    exactly as sklearn's Cython does (float32 input, `x <= threshold` in float64, NaN routed by
    `missing_go_to_left`), and the trees' probabilities are summed in estimator order then
    divided by the number of trees, as ForestClassifier.predict_proba does with n_jobs=1.
    (With n_jobs > 1 sklearn itself adds the trees in whatever order its threads finish.)
    """

    classes_: np.ndarray
    n_features_in_: int

    def __init__(
        self,
        classes: np.ndarray,
        n_features_in: int,
        flat: FlatTrees,
        *,
        allows_nan: bool,
    ) -> None:
        self.classes_ = classes
        self.n_features_in_ = n_features_in
        self._flat = flat
        self._no_votes = np.zeros(len(classes))
        self._allows_nan = allows_nan

    @classmethod
    def compile(cls, estimator: Any) -> CompiledForest | None:
        """The compiled forest, or None for anything whose predictions it would not reproduce.

        Supported: fitted single-output RandomForestClassifier, ExtraTreesClassifier,
        DecisionTreeClassifier and ExtraTreeClassifier (exact types, any hyperparameters).
        """
        if type(estimator) in _FORESTS:
            trees = getattr(estimator, "estimators_", None)
            if not isinstance(trees, list) or not trees:
                return None
        elif type(estimator) in _TREES:
            trees = [estimator]
        else:
            return None
        classes = getattr(estimator, "classes_", None)
        n_features = getattr(estimator, "n_features_in_", None)
        if (
            getattr(estimator, "n_outputs_", None) != 1
            or not isinstance(classes, np.ndarray)
            or classes.ndim != 1
            or len(classes) == 0
            or not isinstance(n_features, int)
        ):
            return None
        if not all(_is_usable_tree(tree, len(classes), n_features) for tree in trees):
            return None
        return cls(
            classes,
            n_features,
            flatten([TreeNodes.of_tree(tree.tree_) for tree in trees]),
            allows_nan=bool(get_tags(trees[0]).input_tags.allow_nan),
        )

    @property
    def n_trees(self) -> int:
        return len(self._flat.roots)

    @property
    def depth(self) -> int:
        return self._flat.depth

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, columns in classes_ order; X is 2-D, already preprocessed.

        Raises ValueError, as sklearn does, for a wrong shape, no rows, infinity or a value too
        large for float32, and NaN when the trees do not route missing values.
        """
        X = float64_rows(X, self.n_features_in_)
        return self._proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels (values of classes_), as sklearn's classes_.take(argmax(proba))."""
        return self.classes_.take(np.argmax(self.predict_proba(X), axis=1), axis=0)

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) from one walk: a forest's predict is argmax(predict_proba)."""
        proba = self._proba(X)
        return self.classes_.take(proba.argmax(axis=1), axis=0), proba

    def _proba(self, X: np.ndarray) -> np.ndarray:
        X = float32_rounded(X, allows_nan=self._allows_nan)
        # sklearn's `proba += tree_proba` from zeros in estimator order, then `/=` the count.
        proba = summed_leaves(self._flat, X, self._no_votes, 1.0)
        proba /= self.n_trees
        return proba


def _is_usable_tree(tree: Any, n_classes: int, n_features: int) -> bool:
    if type(tree) not in _TREES:
        return False
    nodes = getattr(tree, "tree_", None)
    if nodes is None or getattr(tree, "n_outputs_", None) != 1:
        return False
    return bool(
        nodes.n_outputs == 1
        and nodes.max_n_classes == n_classes
        and nodes.n_features == n_features
        and nodes.value.shape == (nodes.node_count, 1, n_classes)
    )


# ---------------------------------------------------------------------------------------------
# Pipeline: ColumnTransformer of numeric branches (impute [+ scale]) -> classifier
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Impute:
    columns: slice  # this branch's columns in the preprocessed matrix
    fill: np.ndarray  # float64 statistics_


@dataclass(frozen=True)
class _Scale:
    columns: slice
    mean: np.ndarray | None  # None when with_mean=False
    scale: np.ndarray | None  # None when with_std=False


_Stage = _Impute | _Scale


class CompiledModel(Protocol):
    """A fitted classifier's predictions on preprocessed rows (float64, no feature names)."""

    classes_: np.ndarray
    n_features_in_: int

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities in classes_ order or None); may give them when not asked."""
        ...


class LibraryModel:
    """Any other fitted classifier, called directly on the compiled preprocessing's matrix.

    Its predictions are scikit-learn's own; what is saved is the pipeline around it (a
    DataFrame, the ColumnTransformer, column selection). Every registry estimator with its
    defaults is compiled; this serves the rest: a classifier a forker adds, and configurations
    the compiled models refuse (e.g. kNN with distance weights, isotonic calibration).
    """

    classes_: np.ndarray
    n_features_in_: int

    def __init__(self, estimator: Any, classes: np.ndarray, n_features_in: int) -> None:
        self.estimator = estimator
        self.classes_ = classes
        self.n_features_in_ = n_features_in
        self._has_probabilities = hasattr(estimator, "predict_proba")

    @classmethod
    def compile(cls, estimator: Any) -> LibraryModel | None:
        classes = getattr(estimator, "classes_", None)
        n_features = getattr(estimator, "n_features_in_", None)
        if (
            not callable(getattr(estimator, "predict", None))
            or not isinstance(classes, np.ndarray)
            or classes.ndim != 1
            or not isinstance(n_features, int)
            # Fitted on a frame (set_output="pandas"): it would warn on, or refuse, a matrix.
            or hasattr(estimator, "feature_names_in_")
        ):
            return None
        return cls(estimator, classes, n_features)

    def predict_with_proba(
        self, X: np.ndarray, *, with_probabilities: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        # predict and argmax(predict_proba) differ for some estimators (SVC): ask for both.
        labels = self.estimator.predict(X)
        if not (with_probabilities and self._has_probabilities):
            return labels, None
        return labels, self.estimator.predict_proba(X)


def compile_model(estimator: Any) -> CompiledModel | None:
    """The fastest exact stand-in for a fitted classifier; None when there is none."""
    compilers: tuple[Callable[[Any], CompiledModel | None], ...] = (
        CompiledForest.compile,
        CompiledGradientBoosting.compile,
        CompiledHistGradientBoosting.compile,
        CompiledLogisticRegression.compile,
        CompiledGaussianNB.compile,
        CompiledCalibratedSVC.compile,
        CompiledKNeighbors.compile,
        LibraryModel.compile,
    )
    for compiler in compilers:
        compiled = compiler(estimator)
        if compiled is not None:
            return compiled
    return None


class CompiledPipeline:
    """A fitted fastml Pipeline whose input is all-numeric, with its preprocessing compiled.

    Replicates, step for step and in float64, what the sklearn pipeline does to each numeric
    column (NaN -> the imputer's statistics_, then (x - mean_) / scale_), so the model sees
    the very same matrix; tree ensembles are compiled too (CompiledForest and
    ML/boosting_inference.py), so are LogisticRegression and GaussianNB
    (ML/linear_inference.py), the calibrated SVC (ML/svm_inference.py) and kNN
    (ML/neighbors_inference.py); any other classifier is called on that matrix (LibraryModel).
    """

    classes_: np.ndarray
    feature_names: list[str]

    def __init__(
        self,
        feature_names: list[str],
        source_columns: np.ndarray,
        stages: list[_Stage],
        model: CompiledModel,
    ) -> None:
        self.feature_names = feature_names
        self.classes_ = model.classes_
        self.model = model
        self._source_columns = source_columns  # preprocessed column j = X_raw[:, source[j]]
        self._stages = stages

    @classmethod
    def compile(cls, pipeline: Any) -> CompiledPipeline | None:
        """The compiled pipeline, or None when it is not exactly the supported shape.

        Supported: Pipeline([ColumnTransformer, classifier]) with steps found by type, where
        every ColumnTransformer branch reads named columns through SimpleImputer(mean or median,
        missing_values=NaN, no indicator) and/or StandardScaler, remainder dropped, no
        transformer_weights; the classifier is anything compile_model accepts.
        """
        if type(pipeline) is not Pipeline:
            return None
        steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
        if len(steps) != 2 or type(steps[0]) is not ColumnTransformer:
            return None
        preprocessing = _compile_column_transformer(steps[0])
        if preprocessing is None:
            return None
        model = compile_model(steps[1])
        if model is None:
            return None
        feature_names, source_columns, stages = preprocessing
        if len(source_columns) != model.n_features_in_:
            return None
        return cls(feature_names, source_columns, stages, model)

    def predict_with_proba(
        self, X_raw: np.ndarray, *, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities) for raw rows: float64, columns in feature_names order, NaN
        = missing. Probabilities (columns in classes_ order) may be None when not asked for, or
        when the model gives none.

        Raises ValueError for a wrong shape, no rows, or infinity (as sklearn's imputer does).
        """
        X_raw = np.asarray(X_raw, dtype=np.float64)
        if X_raw.ndim != 2 or X_raw.shape[1] != len(self.feature_names) or X_raw.shape[0] == 0:
            raise ValueError(
                f"X_raw must be a 2-D array of at least one row and {len(self.feature_names)} "
                f"columns ({', '.join(self.feature_names)}); got shape {X_raw.shape}"
            )
        check_finite(X_raw, allows_nan=True)
        # In the layout ColumnTransformer hands the estimator (F order): a BLAS product's last
        # bit depends on it (seen with LogisticRegression).
        X = np.asfortranarray(self._preprocess(X_raw))
        return self.model.predict_with_proba(X, with_probabilities=with_probabilities)

    def predict_proba(self, X_raw: np.ndarray) -> np.ndarray:
        """Class probabilities for raw rows, as predict_with_proba takes them."""
        _, proba = self.predict_with_proba(X_raw)
        if proba is None:
            raise AttributeError(f"{type(self.model).__name__} gives no probabilities")
        return proba

    def predict(self, X_raw: np.ndarray) -> np.ndarray:
        """Predicted labels (values of classes_) for raw rows, as predict_with_proba takes them."""
        labels, _ = self.predict_with_proba(X_raw, with_probabilities=False)
        return labels

    def _preprocess(self, X_raw: np.ndarray) -> np.ndarray:
        X = X_raw.take(self._source_columns, axis=1)  # a fresh array: safe to edit in place
        for stage in self._stages:
            block = X[:, stage.columns]
            if isinstance(stage, _Impute):
                np.copyto(block, stage.fill, where=np.isnan(block))
            else:
                # In place and in this order, as StandardScaler.transform does.
                if stage.mean is not None:
                    block -= stage.mean
                if stage.scale is not None:
                    block /= stage.scale
        return X


def _compile_column_transformer(
    transformer: Any,
) -> tuple[list[str], np.ndarray, list[_Stage]] | None:
    """(feature names read, source column of each output column, stages) or None."""
    fitted = getattr(transformer, "transformers_", None)
    names_in = getattr(transformer, "feature_names_in_", None)
    if (
        fitted is None
        or names_in is None
        or transformer.transformer_weights is not None
        or getattr(transformer, "sparse_output_", True)
    ):
        return None
    output_columns: list[str] = []
    stages: list[_Stage] = []
    for name, branch, columns in fitted:
        if isinstance(branch, str) and branch == "drop":
            continue
        if not _is_list_of_names(columns):
            return None
        if not columns:
            continue
        width = len(columns)
        start = len(output_columns)
        block = slice(start, start + width)
        if getattr(transformer, "output_indices_", {}).get(name) != block:
            return None
        branch_stages = _compile_branch(branch, block, width)
        if branch_stages is None:
            return None
        stages += branch_stages
        output_columns += columns
    known = [str(name) for name in names_in]
    if not output_columns or not set(output_columns) <= set(known):
        return None
    # Callers send the columns the pipeline reads, in training-frame order.
    feature_names = [name for name in known if name in set(output_columns)]
    position = {name: index for index, name in enumerate(feature_names)}
    source_columns = np.array([position[name] for name in output_columns], dtype=np.intp)
    return feature_names, source_columns, stages


def _is_list_of_names(columns: Any) -> bool:
    return isinstance(columns, list) and all(type(column) is str for column in columns)


def _compile_branch(branch: Any, block: slice, width: int) -> list[_Stage] | None:
    if type(branch) is Pipeline:
        steps = [step for _, step in branch.steps if step not in (None, "passthrough")]
    else:
        steps = [branch]
    stages: list[_Stage] = []
    for step in steps:
        stage = _compile_step(step, block, width)
        if stage is None:
            return None
        stages.append(stage)
    return stages or None


def _compile_step(step: Any, block: slice, width: int) -> _Stage | None:
    if getattr(step, "n_features_in_", None) != width:
        return None
    if type(step) is SimpleImputer:
        return _compile_imputer(step, block, width)
    if type(step) is StandardScaler:
        return _compile_scaler(step, block, width)
    return None


def _compile_imputer(step: SimpleImputer, block: slice, width: int) -> _Impute | None:
    missing = step.missing_values
    # The fill is cast to the dtype seen in fit (a private attribute, read defensively): a
    # float32 fit would round the statistics we must use.
    fill_dtype = getattr(step, "_fill_dtype", np.dtype(np.float64))
    if (
        step.strategy not in _IMPUTER_STRATEGIES
        or not (isinstance(missing, float) and math.isnan(missing))
        or step.add_indicator
        or getattr(step, "indicator_", None) is not None
        or fill_dtype != np.float64
    ):
        return None
    fill = _finite_vector(getattr(step, "statistics_", None), width)
    # A NaN statistic (a column all missing in fit) makes sklearn drop the column: unsupported.
    return None if fill is None else _Impute(block, fill)


def _compile_scaler(step: StandardScaler, block: slice, width: int) -> _Scale | None:
    mean = _finite_vector(getattr(step, "mean_", None), width) if step.with_mean else None
    scale = _finite_vector(getattr(step, "scale_", None), width) if step.with_std else None
    if (step.with_mean and mean is None) or (step.with_std and scale is None):
        return None
    return _Scale(block, mean, scale)


def _finite_vector(values: Any, width: int) -> np.ndarray | None:
    if not isinstance(values, np.ndarray) or values.shape != (width,) or values.dtype.kind != "f":
        return None
    vector = values.astype(np.float64)
    return vector if np.isfinite(vector).all() else None
