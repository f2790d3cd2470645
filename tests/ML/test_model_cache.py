"""Tests for ML/model_cache.py: what a worker serves when the store changes under it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ML.datasets import Dataset
from ML.errors import StoreUnavailable
from ML.model_cache import ModelCache
from ML.model_store import ModelStore
from ML.training import TrainedModel, TrainingOptions, train_model

KEY = b"k" * 32


@pytest.fixture
def trained(mixed_dataset: Dataset) -> TrainedModel:
    return train_model(mixed_dataset, TrainingOptions(estimator="logistic_regression"))


def test_a_store_moved_away_keeps_loaded_models_serving(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = ModelStore(tmp_path / "models", KEY)
    store.save_version("iris", trained.pipeline, trained.metadata)
    store.save_version("other", trained.pipeline, trained.metadata)
    cache = ModelCache(store)
    cache.load("iris")

    store.root_dir.rename(tmp_path / "moved")
    assert cache.refresh() == []

    served = cache.cached("iris")
    assert served is not None and served.version == 1
    with pytest.raises(StoreUnavailable):
        cache.load("other")  # never loaded: 503, not 404
    (tmp_path / "moved").rename(store.root_dir)
    assert cache.load("other").version == 1


def test_a_deleted_model_is_dropped(tmp_path: Path, trained: TrainedModel) -> None:
    store = ModelStore(tmp_path / "models", KEY)
    store.save_version("iris", trained.pipeline, trained.metadata)
    cache = ModelCache(store)
    cache.load("iris")

    store.delete_model("iris")

    assert cache.refresh() == ["iris"]
    assert cache.cached("iris") is None
