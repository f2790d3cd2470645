"""The compiled walk (ML/tree_walk.py summed_leaves): leaves, NaN and category routes, the order
of the sum, and its on-disk cache where the code is read-only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.tree import DecisionTreeClassifier

from ML.boosting_inference import GRADIENT_BOOSTING_SKLEARN_MIN_ROWS, CompiledGradientBoosting
from ML.tree_walk import CategoricalSplits, TreeNodes, flatten, summed_leaves

ML_DIR = Path(__file__).resolve().parents[2] / "ML"


def leaf_ids(tree: DecisionTreeClassifier, X: np.ndarray) -> np.ndarray:
    """The leaf the kernel reaches for each row: a tree whose value at node i is i."""
    nodes = TreeNodes.of_tree(tree.tree_)
    numbered = TreeNodes(
        **{**nodes.__dict__, "value": np.arange(len(nodes.left), dtype=np.float64)[:, None]}
    )
    rounded = np.ascontiguousarray(X.astype(np.float32), dtype=np.float64)
    total = summed_leaves(flatten([numbered]), rounded, np.zeros(1), 1.0)
    return total[:, 0].astype(np.intp)


@pytest.mark.parametrize("n_rows", [1, 2, 1000])
def test_deep_tree_leaves_are_sklearns(n_rows: int) -> None:
    features, labels = make_classification(
        n_samples=2000, n_features=8, n_informative=6, flip_y=0.3, random_state=0
    )
    tree = DecisionTreeClassifier(random_state=0).fit(features, labels)  # grown to purity
    assert tree.get_depth() >= 20
    rows = np.random.default_rng(n_rows).normal(size=(n_rows, 8)) * 2
    assert np.array_equal(leaf_ids(tree, rows), tree.apply(rows.astype(np.float32)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nan_goes_where_sklearn_sends_it(seed: int) -> None:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(400, 4))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    features[rng.random(features.shape) < 0.3] = np.nan
    tree = DecisionTreeClassifier(random_state=seed).fit(features, labels)
    routes = ~tree.tree_.missing_go_to_left[tree.tree_.children_left >= 0].astype(bool)
    assert routes.any() and not routes.all()  # NaN goes both ways somewhere in this tree
    rows = rng.normal(size=(500, 4))
    rows[rng.random(rows.shape) < 0.5] = np.nan
    assert np.array_equal(leaf_ids(tree, rows), tree.apply(rows.astype(np.float32)))


def single_leaf_tree(value: float) -> TreeNodes:
    return TreeNodes(
        left=np.array([-1]),
        right=np.array([-1]),
        feature=np.array([-2]),
        threshold=np.array([-2.0]),
        missing_go_to_left=np.array([True]),
        value=np.array([[value]]),
        depth=0,
    )


def test_trees_are_added_in_their_order_per_output() -> None:
    # One big value then many tiny ones: added in order each tiny one is lost; a pairwise or
    # reordered sum would keep some of them.
    values = [1.0] + [1e-16] * 99
    trees = [single_leaf_tree(value) for value in values + values[::-1]]
    total = summed_leaves(flatten(trees, outputs=2), np.zeros((3, 1)), np.zeros(2), 1.0)
    in_order = [0.0, 0.0]
    for group, group_values in enumerate([values, values[::-1]]):
        for value in group_values:
            in_order[group] += value
    assert in_order[0] == 1.0 and in_order[1] != 1.0
    assert np.array_equal(total, np.tile(in_order, (3, 1)))


def test_start_and_scale_are_sklearns_product_then_sum() -> None:
    trees = [single_leaf_tree(value) for value in (0.1, 0.7, 0.3)]
    total = summed_leaves(flatten(trees), np.zeros((1, 1)), np.array([0.2]), 0.1)
    assert total[0, 0] == ((0.2 + 0.1 * 0.1) + 0.1 * 0.7) + 0.1 * 0.3


def categorical_stump(*, nan_goes_right: bool) -> tuple[TreeNodes, CategoricalSplits]:
    """One categorical split on column 0: categories 1 and 3 go left, 0 and 2 (also seen in
    training) go right, anything else is missing."""
    stump = TreeNodes(
        left=np.array([1, -1, -1]),
        right=np.array([2, -1, -1]),
        feature=np.array([0, 0, 0]),
        threshold=np.array([0.0, 0.0, 0.0]),
        missing_go_to_left=np.array([not nan_goes_right, True, True]),
        value=np.array([[0.0], [-1.0], [1.0]]),
        depth=1,
    )
    left, known = np.zeros((2, 8), dtype=np.uint32), np.zeros((2, 8), dtype=np.uint32)
    left[1, 0] = (1 << 1) | (1 << 3)
    known[1, 0] = 0b1111
    splits = CategoricalSplits(
        is_categorical=np.array([True, False, False]),
        left_row=np.array([1, 0, 0], dtype=np.intp),
        left_bitsets=left,
        known_row=np.array([1, 0, 0], dtype=np.intp),
        known_bitsets=known,
    )
    return stump, splits


@pytest.mark.parametrize("nan_goes_right", [False, True])
def test_categorical_nodes_read_the_bitsets(nan_goes_right: bool) -> None:
    stump, splits = categorical_stump(nan_goes_right=nan_goes_right)
    codes = np.array([[1.0], [3.0], [0.0], [2.0], [3.7], [5.0], [np.nan], [-1.0], [300.0]])
    total = summed_leaves(flatten([stump], splits), codes, np.zeros(1), 1.0)[:, 0]
    missing = 1.0 if nan_goes_right else -1.0
    # 3.7 truncates to category 3, as sklearn's uint8 cast does; 5 was never seen in training.
    expected = [-1.0, -1.0, 1.0, 1.0, -1.0, missing, missing, missing, missing]
    assert total.tolist() == expected


def test_the_kernel_refuses_arrays_it_was_not_compiled_for() -> None:
    flat = flatten([single_leaf_tree(1.0)])
    with pytest.raises(TypeError):
        summed_leaves(flat, np.zeros((2, 1), dtype=np.float32), np.zeros(1), 1.0)
    with pytest.raises(TypeError):
        summed_leaves(flat, np.zeros((2, 2))[:, :1], np.zeros(1), 1.0)  # not C-contiguous


def test_gradient_boosting_large_batches_match_sklearn() -> None:
    """From GRADIENT_BOOSTING_SKLEARN_MIN_ROWS rows sklearn's code runs: same answers."""
    features, labels = make_classification(n_samples=300, n_classes=3, n_informative=4)
    estimator = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(features, labels)
    compiled = CompiledGradientBoosting.compile(estimator)
    assert compiled is not None
    for n_rows in (GRADIENT_BOOSTING_SKLEARN_MIN_ROWS - 1, GRADIENT_BOOSTING_SKLEARN_MIN_ROWS):
        rows = np.random.default_rng(n_rows).normal(size=(n_rows, features.shape[1]))
        labels_out, proba = compiled.predict_with_proba(rows)
        assert np.array_equal(proba, estimator.predict_proba(rows))
        assert np.array_equal(labels_out, estimator.predict(rows))


# ---------------------------------------------------------------------------------------------
# The on-disk cache, in a fresh process each
# ---------------------------------------------------------------------------------------------

PROBE = """
import numpy as np, warnings
warnings.simplefilter("error")
import tree_walk
tree = tree_walk.TreeNodes(np.array([-1]), np.array([-1]), np.array([-2]), np.array([-2.0]),
                           np.array([True]), np.array([[2.5]]), 0)
total = tree_walk.summed_leaves(tree_walk.flatten([tree]), np.zeros((1, 1)), np.zeros(1), 1.0)
assert total[0, 0] == 2.5
print(sum(tree_walk._summed_leaves.stats.cache_hits.values()))
"""


def run_probe(code_dir: Path, env: dict[str, str]) -> int:
    """Import a copy of tree_walk.py from code_dir in a new interpreter; its cache hits."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=code_dir,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(code_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return sum(int(hits) for hits in done.stdout.split())


def read_only_copy(tmp_path: Path) -> Path:
    """tree_walk.py where nothing can be written beside it, even by root: its __pycache__ is a
    file, so no directory can be made there."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    shutil.copy(ML_DIR / "tree_walk.py", code_dir)
    (code_dir / "__pycache__").write_text("")
    return code_dir


def test_without_a_writable_cache_directory_it_compiles_in_memory(tmp_path: Path) -> None:
    code_dir = read_only_copy(tmp_path)
    (tmp_path / "not_a_dir").write_text("")
    unwritable = str(tmp_path / "not_a_dir" / "cache")
    env = {"HOME": unwritable, "XDG_CACHE_HOME": unwritable, "PYTHONDONTWRITEBYTECODE": "1"}
    assert run_probe(code_dir, env) == 0


def test_numba_cache_dir_is_filled_once_then_loaded(tmp_path: Path) -> None:
    code_dir = read_only_copy(tmp_path)
    cache_dir = tmp_path / "numba_cache"
    env = {"NUMBA_CACHE_DIR": str(cache_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    assert run_probe(code_dir, env) == 0  # compiled, then saved
    assert list(cache_dir.rglob("*.nbi")) and list(cache_dir.rglob("*.nbc"))
    assert run_probe(code_dir, env) == 1  # loaded
