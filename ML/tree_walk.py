"""Fitted decision trees as flat node arrays, the vectorised walk that finds each row's leaf,
and the checks every compiled model makes on the rows it is given."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CategoricalSplits:
    """HistGradientBoosting's categorical nodes, as sklearn's _predict_one_from_raw_data reads them.

    A row at a categorical node goes left when its category's bit is set in the node's left
    bitset, right when it is another category seen in training, and where missing values go
    when it is NaN, negative or a category never seen in training.
    """

    is_categorical: np.ndarray  # bool (nodes,)
    left_row: np.ndarray  # intp (nodes,): the node's row in left_bitsets (0 elsewhere)
    left_bitsets: np.ndarray  # uint32 (splits + 1, 8)
    known_row: np.ndarray  # intp (nodes,): the node's feature's row in known_bitsets
    known_bitsets: np.ndarray  # uint32 (categorical features + 1, 8)


@dataclass(frozen=True)
class FlatTrees:
    """Every tree's nodes in shared arrays; a leaf is its own child, so walking on stays there."""

    feature: np.ndarray  # intp (nodes,): feature tested at the node (0 at leaves)
    threshold: np.ndarray  # float64 (nodes,): go left when X[feature] <= threshold
    children: np.ndarray  # intp (2 * nodes,): [2i] left child, [2i + 1] right child
    nan_goes_right: np.ndarray  # bool (nodes,): where a NaN goes (missing_go_to_left negated)
    value: np.ndarray  # float64 (nodes, outputs): what the tree predicts at that node
    roots: np.ndarray  # intp (trees,): each tree's root in the shared arrays
    depth: int  # deepest leaf of any tree: levels to walk
    categorical: CategoricalSplits | None = None


@dataclass(frozen=True)
class TreeNodes:
    """One tree's nodes as plain arrays (children < 0 at leaves)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_go_to_left: np.ndarray
    value: np.ndarray  # (nodes, outputs)
    depth: int

    @classmethod
    def of_tree(cls, tree: Any) -> TreeNodes:
        """The nodes of a fitted sklearn `Tree` (a DecisionTree*'s `tree_`), first output."""
        return cls(
            left=tree.children_left,
            right=tree.children_right,
            feature=tree.feature,
            threshold=tree.threshold,
            missing_go_to_left=tree.missing_go_to_left,
            value=tree.value[:, 0, :],
            depth=int(tree.max_depth),
        )


def flatten(trees: list[TreeNodes], categorical: CategoricalSplits | None = None) -> FlatTrees:
    features, thresholds, children, nan_right, values, roots = [], [], [], [], [], []
    offset = 0
    for tree in trees:
        count = len(tree.left)
        is_leaf = tree.left < 0
        own = np.arange(count, dtype=np.intp)
        pair = np.empty(2 * count, dtype=np.intp)
        pair[0::2] = np.where(is_leaf, own, tree.left) + offset
        pair[1::2] = np.where(is_leaf, own, tree.right) + offset
        features.append(np.where(is_leaf, 0, tree.feature).astype(np.intp))
        thresholds.append(np.where(is_leaf, 0.0, tree.threshold).astype(np.float64))
        children.append(pair)
        nan_right.append(~tree.missing_go_to_left.astype(bool))
        values.append(np.asarray(tree.value, dtype=np.float64))
        roots.append(offset)
        offset += count
    return FlatTrees(
        feature=np.concatenate(features),
        threshold=np.concatenate(thresholds),
        children=np.concatenate(children),
        nan_goes_right=np.concatenate(nan_right),
        value=np.ascontiguousarray(np.concatenate(values)),
        roots=np.asarray(roots, dtype=np.intp),
        depth=max(tree.depth for tree in trees),
        categorical=categorical,
    )


def leaf_nodes(flat: FlatTrees, X: np.ndarray, *, has_nan: bool) -> np.ndarray:
    """Each (tree, row)'s leaf, shape (trees, rows): all pairs walk one level per step.

    X is C-contiguous float64, already rounded as the library rounds it (float32 for sklearn's
    Tree, float64 for HistGradientBoosting); categorical columns, if any, hold category codes
    (below 256: a bitset holds 8 x 32 bits).
    """
    n_rows, n_features = X.shape
    x_flat = X.ravel()
    row_start = np.arange(0, n_rows * n_features, n_features, dtype=np.intp)
    node = np.repeat(flat.roots[:, np.newaxis], n_rows, axis=1)  # (trees, rows)
    categorical = flat.categorical
    for _ in range(flat.depth):
        column = flat.feature.take(node)
        if n_rows > 1:
            column += row_start
        x = x_flat.take(column)
        goes_right = x > flat.threshold.take(node)  # NaN > t is False: fixed below
        if has_nan:
            goes_right |= np.isnan(x) & flat.nan_goes_right.take(node)
        if categorical is not None:
            _route_categories(categorical, flat.nan_goes_right, node, x, goes_right)
        node <<= 1
        node += goes_right
        node = flat.children.take(node)
    return node


def _route_categories(
    splits: CategoricalSplits,
    nan_goes_right: np.ndarray,
    node: np.ndarray,
    x: np.ndarray,
    goes_right: np.ndarray,
) -> None:
    at_split = splits.is_categorical.take(node)
    if not at_split.any():
        return
    is_category = at_split & (x >= 0)  # False for NaN and negative values: "missing"
    # Truncated toward zero, as sklearn's `<uint8>value` cast does (codes are below 256).
    code = np.where(is_category, x, 0.0).astype(np.intp)
    word, bit = code >> 5, (code & 31).astype(np.uint32)
    left = (splits.left_bitsets[splits.left_row.take(node), word] >> bit) & 1
    known = (splits.known_bitsets[splits.known_row.take(node), word] >> bit) & 1
    as_missing = nan_goes_right.take(node)
    category_goes_right = np.where(left == 1, False, np.where(known == 1, True, as_missing))
    np.copyto(goes_right, np.where(is_category, category_goes_right, as_missing), where=at_split)


def float64_rows(X: Any, n_features: int) -> np.ndarray:
    """X as a float64 matrix of at least one row and `n_features` columns, or ValueError."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features or X.shape[0] == 0:
        raise ValueError(
            f"X must be a 2-D array of at least one row and {n_features} columns; "
            f"got shape {X.shape}"
        )
    return X


def float32_rows(X: np.ndarray, *, allows_nan: bool) -> tuple[np.ndarray, bool]:
    """X as sklearn's trees read it (C-contiguous float32), and whether it has NaN.

    Raises ValueError, as sklearn does, for infinity or a value too large for float32, and for
    NaN when the model does not route missing values.
    """
    # The warning numpy would emit on float32 overflow becomes the ValueError below.
    with np.errstate(over="ignore", invalid="ignore"):
        X32 = np.ascontiguousarray(X, dtype=np.float32)
    has_nan = check_finite(X32, allows_nan=allows_nan, limit="a value too large for float32")
    return X32, has_nan


def check_finite(X: np.ndarray, *, allows_nan: bool, limit: str = "") -> bool:
    """Whether X holds NaN; raise ValueError for infinity, or for NaN the model refuses."""
    # One float64 sum is the cheapest test: it cannot overflow on float32 values, and any
    # NaN or infinity makes it non-finite (a float64 sum can overflow: then look closer).
    if math.isfinite(X.sum(dtype=np.float64)):
        return False
    if np.isinf(X).any():
        beyond = f" or {limit} (about 3.4e38)" if limit else ""
        raise ValueError(f"X contains infinity{beyond}; send finite numbers")
    if not np.isnan(X).any():
        return False
    if not allows_nan:
        raise ValueError("X contains NaN and this model does not accept missing values")
    return True
