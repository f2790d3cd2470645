"""Fitted decision trees as flat node arrays, the compiled walk that sums each row's leaves,
and the checks every compiled model makes on the rows it is given.

The walk is compiled by numba: a row goes down a tree in nanoseconds per level, where a numpy
walk paid a call per level over all (tree, row) pairs and sklearn ~4 us per tree per call.
It is compiled for one signature when this module is first imported (seconds), and cached on
disk so that later processes load it instead (under a second): numba keeps the cache in
$NUMBA_CACHE_DIR when that is set (the Docker image sets it to a directory its user owns and
fills it at build), else in ML/__pycache__ when writable, else in the user's cache directory
(~/.cache/numba); with none writable, each process compiles it for itself. Gunicorn's master
imports it before it forks the workers (gunicorn/gunicorn-config.py). The compiled code runs
on the calling thread only (no parallel=True, no threading layer), so forking servers and
Celery's prefork pool may fork after importing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
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


# One node of the compiled walk: what it reads at a node sits in one 32-byte record (a cache
# line holds two), as sklearn's own Node struct does; a leaf is its own left and right child.
NODE = np.dtype(
    [
        ("threshold", np.float64),  # go left when x <= threshold
        ("left", np.int32),  # children, as indices into all trees' nodes
        ("right", np.int32),
        ("feature", np.int32),  # the column tested (0 at leaves)
        ("left_row", np.int32),  # categorical nodes: its rows in the bitset tables (else 0)
        ("known_row", np.int32),
        ("nan_goes_right", np.bool_),  # where NaN goes (missing_go_to_left negated)
        ("is_categorical", np.bool_),
    ],
    align=True,
)


@dataclass(frozen=True)
class FlatTrees:
    """Every tree's nodes in one record array, walked by summed_leaves."""

    nodes: np.ndarray  # NODE (nodes,)
    value: np.ndarray  # float64 (nodes, outputs): what the tree predicts at that node
    roots: np.ndarray  # intp (trees,): each tree's root in nodes
    column: np.ndarray  # intp (trees,): the first column of the total its values are added to
    depth: int  # deepest leaf of any tree
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


def flatten(
    trees: list[TreeNodes], categorical: CategoricalSplits | None = None, *, outputs: int = 1
) -> FlatTrees:
    """The trees in shared arrays. With several outputs (boosting, value width 1) the trees come
    as consecutive equal groups, one per output, each tree adding to its group's column."""
    total = sum(len(tree.left) for tree in trees)
    if total >= 2**31:
        raise ValueError(f"{total} tree nodes; the compiled walk indexes at most 2**31 - 1")
    nodes = np.zeros(total, dtype=NODE)
    values, roots = [], []
    offset = 0
    for tree in trees:
        count = len(tree.left)
        block = nodes[offset : offset + count]
        is_leaf = tree.left < 0
        own = np.arange(offset, offset + count)
        block["left"] = np.where(is_leaf, own, tree.left + offset)
        block["right"] = np.where(is_leaf, own, tree.right + offset)
        block["feature"] = np.where(is_leaf, 0, tree.feature)
        block["threshold"] = np.where(is_leaf, 0.0, tree.threshold)
        block["nan_goes_right"] = ~tree.missing_go_to_left.astype(bool)
        values.append(np.asarray(tree.value, dtype=np.float64))
        roots.append(offset)
        offset += count
    if categorical is not None:
        nodes["is_categorical"] = categorical.is_categorical
        nodes["left_row"] = categorical.left_row
        nodes["known_row"] = categorical.known_row
    return FlatTrees(
        nodes=nodes,
        value=np.ascontiguousarray(np.concatenate(values)),
        roots=np.asarray(roots, dtype=np.intp),
        column=np.arange(len(trees), dtype=np.intp) // (len(trees) // outputs),
        depth=max(tree.depth for tree in trees),
        categorical=categorical,
    )


def summed_leaves(flat: FlatTrees, X: np.ndarray, start: np.ndarray, scale: float) -> np.ndarray:
    """start + scale * each tree's leaf value for every row: float64 (rows, len(start)).

    X is C-contiguous float64, already rounded as the library rounds it (float32 for sklearn's
    Tree, float64 for HistGradientBoosting); categorical columns, if any, hold category codes;
    start is C-contiguous float64. For each row the trees are added in their order, one by
    one, as sklearn adds them. Arrays of another dtype or layout raise TypeError.
    """
    splits = flat.categorical
    left, known = (splits.left_bitsets, splits.known_bitsets) if splits else (_NONE, _NONE)
    return _summed_leaves(
        flat.nodes, flat.value, flat.roots, flat.column, left, known, X, start, scale
    )


_NONE = np.zeros((0, 8), dtype=np.uint32)  # no bitsets: read only at categorical nodes

# One signature, so numba compiles (or loads from its cache) once, when this module is imported,
# and a call never compiles: an array of another dtype or layout is a TypeError.
_INDEX, _TABLE = numba.intp[::1], numba.uint32[:, ::1]
_FLOATS, _MATRIX = numba.float64[::1], numba.float64[:, ::1]
_SIGNATURE = _MATRIX(
    numba.from_dtype(NODE)[::1], _MATRIX, _INDEX, _INDEX, _TABLE, _TABLE,  # the trees
    _MATRIX, _FLOATS, numba.float64,  # X, start, scale
)  # fmt: skip


def _compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    try:
        return numba.njit(_SIGNATURE, cache=True, nogil=True)(function)
    except RuntimeError:
        # No writable cache directory (see the module docstring): compile for this process only.
        return numba.njit(_SIGNATURE, nogil=True)(function)


@numba.njit(inline="always")
def _category_route(x: float, left: np.ndarray, known: np.ndarray) -> int:
    """0 (left) when x's bit is set in the left bitset, 1 when in the known categories, else -1.

    Truncated toward zero, as sklearn's `<uint8>value` cast does; codes are below 256 (a bitset
    holds 8 x 32 bits), so larger ones, which its encoder never gives, count as missing here.
    """
    if not 0 <= x < 256:  # False for NaN
        return -1
    code = int(x)
    word, bit = code >> 5, code & 31
    if (left[word] >> bit) & 1:
        return 0
    if (known[word] >> bit) & 1:
        return 1
    return -1


@_compiled
def _summed_leaves(
    nodes: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    column: np.ndarray,
    left_bitsets: np.ndarray,
    known_bitsets: np.ndarray,
    X: np.ndarray,
    start: np.ndarray,
    scale: float,
) -> np.ndarray:
    n_rows, width = X.shape[0], value.shape[1]
    total = np.empty((n_rows, start.shape[0]))
    for row in range(n_rows):
        total[row] = start
    # Tree by tree (its nodes stay in cache), so each row's total adds the trees in order.
    for tree in range(roots.shape[0]):
        root, first = roots[tree], column[tree]
        for row in range(n_rows):
            at = root
            node = nodes[at]
            while node.left != at:  # a leaf is its own left child
                x = X[row, node.feature]
                if node.is_categorical:
                    route = _category_route(
                        x, left_bitsets[node.left_row], known_bitsets[node.known_row]
                    )
                    # Missing, negative or never seen in training: where NaN goes.
                    goes_right = node.nan_goes_right if route < 0 else route == 1
                else:
                    # sklearn goes left when x <= threshold; NaN compares False both ways.
                    goes_right = x > node.threshold or (x != x and node.nan_goes_right)
                at = node.right if goes_right else node.left
                node = nodes[at]
            for output in range(width):
                total[row, first + output] += scale * value[at, output]
    return total


def float64_rows(X: Any, n_features: int) -> np.ndarray:
    """X as a float64 matrix of at least one row and `n_features` columns, or ValueError."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features or X.shape[0] == 0:
        raise ValueError(
            f"X must be a 2-D array of at least one row and {n_features} columns; "
            f"got shape {X.shape}"
        )
    return X


def float32_rounded(X: np.ndarray, *, allows_nan: bool) -> np.ndarray:
    """X rounded to float32, as sklearn's trees read it, held in C-contiguous float64 (exact).

    Raises ValueError, as sklearn does, for infinity or a value too large for float32, and for
    NaN when the model does not route missing values.
    """
    # The warning numpy would emit on float32 overflow becomes the ValueError below.
    with np.errstate(over="ignore", invalid="ignore"):
        X32 = np.asarray(X, dtype=np.float32)
    check_finite(X32, allows_nan=allows_nan, limit="a value too large for float32")
    return np.ascontiguousarray(X32, dtype=np.float64)


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
