"""Tests for ML/neighbors_inference.py: kNN gives scikit-learn's labels and probabilities bit
for bit, the same neighbours on ties in distance included, or is not compiled."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.neighbors import KNeighborsClassifier, RadiusNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ML import neighbors_inference
from ML.forest_inference import compile_model
from ML.neighbors_inference import CompiledKNeighbors, _Search
from tests.ML.test_boosting_inference import assert_pipeline_matches, ten_classes, trained_on_frame
from tests.ML.test_forest_inference import BATCH_SIZES, assert_same_as_sklearn, dataset

KNN = KNeighborsClassifier


@cache
def training_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """iris (duplicate rows), integer-valued sets (many equal distances), ten classes, the
    c3 set with every row three times, and iris standardised as the registry's pipeline does.
    "wide" has 20 columns, so "auto" searches by brute force."""
    if name == "c10":
        return ten_classes()
    if name == "c3-triplicated":
        features, labels = dataset("c3-int")
        return np.tile(features, (3, 1)), np.tile(labels, 3)
    if name == "iris-scaled":
        features, labels = dataset("iris")
        return StandardScaler().fit_transform(features), labels
    if name == "wide":
        features, labels = dataset("c3-str")
        return np.round(np.tile(features, (1, 4))[:, :20] * 0.5), labels
    return dataset(name)


CASES: list[tuple[str, Callable[[], Any], _Search]] = [
    ("iris", lambda: KNN(), _Search.TREE),
    ("iris-scaled", lambda: KNN(n_neighbors=5, n_jobs=1), _Search.TREE),
    ("iris", lambda: KNN(n_neighbors=1), _Search.TREE),
    ("iris", lambda: KNN(n_neighbors=8, algorithm="ball_tree"), _Search.TREE),
    ("c2-str", lambda: KNN(n_neighbors=4), _Search.TREE),
    ("c2-int", lambda: KNN(n_neighbors=6, p=1, leaf_size=3), _Search.TREE),
    ("c3-int", lambda: KNN(n_neighbors=7, metric="chebyshev"), _Search.TREE),
    ("c3-triplicated", lambda: KNN(n_neighbors=5), _Search.TREE),
    ("c3-triplicated", lambda: KNN(n_neighbors=4, algorithm="ball_tree", p=3), _Search.TREE),
    ("c7-str", lambda: KNN(n_neighbors=10, n_jobs=2), _Search.TREE),
    ("c10", lambda: KNN(), _Search.TREE),
    ("wide", lambda: KNN(), _Search.ARGKMIN),
    ("c3-triplicated", lambda: KNN(n_neighbors=5, algorithm="brute"), _Search.ARGKMIN),
    ("c3-int", lambda: KNN(n_neighbors=6, algorithm="brute", p=1), _Search.CLASS_MODE),
    ("c10", lambda: KNN(algorithm="brute", metric="manhattan"), _Search.CLASS_MODE),
    ("c3-triplicated", lambda: KNN(n_neighbors=5, algorithm="brute", metric="chebyshev"),
     _Search.CLASS_MODE),
]  # fmt: skip


@cache
def fitted(case: int) -> tuple[KNeighborsClassifier, np.ndarray]:
    name, build, _ = CASES[case]
    features, labels = training_data(name)
    return build().fit(features, labels), features


def compiled(estimator: Any) -> CompiledKNeighbors:
    model = CompiledKNeighbors.compile(estimator)
    assert model is not None
    assert np.array_equal(model.classes_, estimator.classes_)
    assert model.n_features_in_ == estimator.n_features_in_
    return model


def probe_rows(features: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    """Training rows (ties with their duplicates), midpoints of two training rows (ties between
    them), rows nudged by a step the integer-valued sets share, and random ones."""
    rng = np.random.default_rng(seed)
    first = features[rng.integers(0, len(features), n_rows)]
    second = features[rng.integers(0, len(features), n_rows)]
    kind = rng.integers(0, 4, (n_rows, 1))
    nudged = first + rng.choice([-1.0, 0.0, 0.5, 1.0], size=first.shape)
    noise = first + rng.normal(scale=0.7, size=first.shape)
    return np.select(
        [kind == 0, kind == 1, kind == 2], [first, (first + second) / 2, nudged], noise
    )


@pytest.fixture(params=["auto", "tree-query", "clear-cut"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the batch-size choice, or with KDTree.query or the clear-cut product
    (falling back to the query on ties) forced for every batch."""
    limits = {"tree-query": -1, "clear-cut": 10**12}
    if request.param in limits:
        monkeypatch.setattr(
            neighbors_inference, "CLEAR_CUT_MAX_ELEMENTS", limits[str(request.param)]
        )
    return str(request.param)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_compiled_kneighbors_matches_sklearn(case: int, strategy: str) -> None:
    estimator, features = fitted(case)
    model = compiled(estimator)
    assert model._search is CASES[case][2]
    with threadpool_limits(limits=1):
        for n_rows in BATCH_SIZES:
            rows = probe_rows(features, n_rows, seed=case * 100 + n_rows)
            for layout in (np.ascontiguousarray(rows), np.asfortranarray(rows)):
                labels, proba = model.predict_with_proba(layout)
                assert_same_as_sklearn(
                    estimator.predict_proba(layout), estimator.predict(layout), proba, labels
                )


def test_ties_are_real_in_the_probes() -> None:
    """The probes do hit equal distances at the k-th neighbour, where a different search
    could keep other rows: otherwise the matches above would prove little about ties."""
    estimator, features = fitted(CASES.index(next(c for c in CASES if c[0] == "c3-triplicated")))
    rows = probe_rows(features, 300, seed=0)
    distances, _ = estimator.kneighbors(rows, n_neighbors=estimator.n_neighbors + 1)
    assert (distances[:, -1] == distances[:, -2]).mean() > 0.5


def test_clear_cut_search_finds_the_trees_neighbours_or_declines_on_ties() -> None:
    """On iris, most nudged rows have a clear k-th neighbour (the same rows as KDTree.query,
    up to order); rows with ties at the k-th place (a copy of a duplicated training row, the
    midpoint of two rows) are declined, so the tree decides them."""
    estimator, features = fitted(0)
    model = compiled(estimator)
    rng = np.random.default_rng(0)
    clear = 0
    for row in features + rng.normal(scale=0.05, size=features.shape):
        nearest = model._clear_cut_neighbours(row.reshape((1, -1)))
        if nearest is not None:
            clear += 1
            tree = estimator._tree.query(row.reshape((1, -1)), 5, return_distance=False)
            assert np.array_equal(np.sort(nearest), np.sort(tree))
    assert clear > 0.8 * len(features)
    distinct, counts = np.unique(features, axis=0, return_counts=True)
    duplicated = distinct[counts.argmax()]
    twin = features[(features == duplicated).all(axis=1)]
    assert len(twin) >= 2
    one_nn = compiled(KNN(n_neighbors=1).fit(*dataset("iris")))
    assert one_nn._clear_cut_neighbours(twin[:1]) is None
    midpoint = (features[:1] + features[50:51]) / 2
    two_nn = compiled(
        KNN(n_neighbors=1).fit(np.concatenate([features[:1], features[50:51]]), [0, 1])
    )
    assert two_nn._clear_cut_neighbours(midpoint) is None


def test_clear_cut_search_is_only_for_euclidean_kd_trees() -> None:
    has_it = {case: compiled(fitted(case)[0])._has_clear_cut_search for case in range(len(CASES))}
    assert has_it[0] and has_it[1] and has_it[7]
    assert not has_it[3]  # ball_tree
    assert not has_it[5]  # p=1
    assert not has_it[11]  # brute


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_compiled_kneighbors_refuses_what_sklearn_refuses(bad: float) -> None:
    estimator, _ = fitted(0)
    rows = np.array([[5.0, 3.0, bad, 1.0]])
    with pytest.raises(ValueError):
        estimator.predict_proba(rows)
    with pytest.raises(ValueError, match=r"infinity|NaN"):
        compiled(estimator).predict_with_proba(rows)


@pytest.mark.parametrize("shape", [(0, 4), (1, 3), (4,), (1, 5)])
def test_compiled_kneighbors_refuses_wrong_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="4 columns"):
        compiled(fitted(0)[0]).predict_with_proba(np.zeros(shape))


class MyKNN(KNeighborsClassifier):
    """A subclass may change predict_proba: it is not compiled."""


def iris_fit(estimator: Any) -> Any:
    return estimator.fit(*dataset("iris"))


def _distance_squared(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).sum())


UNSUPPORTED: dict[str, Callable[[], Any]] = {
    "unfitted": lambda: KNN(),
    "distance-weights": lambda: iris_fit(KNN(weights="distance")),
    "callable-weights": lambda: iris_fit(KNN(weights=lambda d: 1 / (1 + d))),
    "callable-metric-brute": lambda: iris_fit(KNN(algorithm="brute", metric=_distance_squared)),
    "precomputed": lambda: KNN(metric="precomputed").fit(
        np.abs(np.subtract.outer(np.arange(30.0), np.arange(30.0))), [0, 1, 2] * 10
    ),
    "nan-euclidean": lambda: iris_fit(KNN(metric="nan_euclidean")),
    "sparse-fit": lambda: KNN(algorithm="brute").fit(
        sparse.csr_matrix(dataset("iris")[0]), dataset("iris")[1]
    ),
    "multi-output": lambda: KNN().fit(
        dataset("iris")[0], np.column_stack([dataset("iris")[1]] * 2)
    ),
    "subclass": lambda: iris_fit(MyKNN()),
    "radius": lambda: iris_fit(RadiusNeighborsClassifier(radius=1.0)),
    "none": lambda: None,
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_compiled_kneighbors_returns_none_for_unsupported(kind: str) -> None:
    assert CompiledKNeighbors.compile(UNSUPPORTED[kind]()) is None


@pytest.mark.parametrize("kind", ["distance-weights", "callable-metric-brute", "subclass"])
def test_unsupported_kneighbors_are_served_by_scikit_learn(kind: str) -> None:
    assert type(compile_model(UNSUPPORTED[kind]())).__name__ == "LibraryModel"


# ---------------------------------------------------------------------------------------------
# The registry's knn, trained by ML/training.py, behind CompiledPipeline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c10", "c3-triplicated"])
def test_registry_knn_matches_its_pipeline_on_ten_classes_and_on_ties(name: str) -> None:
    """Ten classes, and every row three times over (ties in distance after scaling), a tenth
    of the cells empty (iris and binary sets: test_every_registry_estimator_compiles_and_...)."""
    pipeline, data = trained_on_frame("knn", *training_data(name), nan_share=0.1)
    assert_pipeline_matches(pipeline, data, CompiledKNeighbors)
