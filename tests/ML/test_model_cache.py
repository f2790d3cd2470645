"""Tests for ML/model_cache.py: what a worker serves when the store changes under it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ML.datasets import Dataset
from ML.errors import ModelUnusable, StoreUnavailable
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


def store_with_iris(tmp_path: Path, trained: TrainedModel, versions: int) -> ModelStore:
    store = ModelStore(tmp_path / "models", KEY)
    for _ in range(versions):
        store.save_version("iris", trained.pipeline, trained.metadata)
    return store


def flip_a_byte(path: Path) -> bytes:
    """Change one byte of `path` in place (same size, same inode); return the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return original


def artifact_of(store: ModelStore, name: str, version: int) -> Path:
    return store.root_dir / name / "versions" / str(version) / "model.joblib"


def test_an_artifact_changed_after_loading_is_refused_naming_the_rollback(
    tmp_path: Path, trained: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_with_iris(tmp_path, trained, versions=2)
    cache = ModelCache(store)
    assert cache.load("iris").version == 2
    original = flip_a_byte(artifact_of(store, "iris", 2))

    with caplog.at_level(logging.WARNING, logger="ML.model_cache"):
        assert cache.refresh() == ["iris"]
        for _ in range(3):
            assert cache.refresh() == []

    assert cache.cached("iris") is None
    with pytest.raises(ModelUnusable, match="does not match its signed SHA-256") as refused:
        cache.load("iris")
    assert (refused.value.model_name, refused.value.rollback_version) == ("iris", 1)
    assert "version 1 is the newest usable one" in refused.value.message
    assert [r.getMessage() for r in caplog.records if r.name == "ML.model_cache"] == [
        f"refusing to serve: {refused.value}"
    ]

    artifact_of(store, "iris", 2).write_bytes(original)  # put back as it was signed
    assert cache.refresh() == ["iris"]
    served = cache.cached("iris")
    assert served is not None and served.version == 2


def test_every_worker_gives_the_same_answer_for_a_changed_version(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = store_with_iris(tmp_path, trained, versions=2)
    had_loaded_it = ModelCache(store)
    had_loaded_it.load("iris")
    flip_a_byte(artifact_of(store, "iris", 2))
    # A worker started later (or after a restart) shares no memory with the first.
    started_later = ModelCache(ModelStore(tmp_path / "models", KEY))

    had_loaded_it.refresh()

    answers = []
    for cache in (had_loaded_it, started_later):
        with pytest.raises(ModelUnusable) as refused:
            cache.load("iris")
        answers.append(refused.value.message)
    assert answers[0] == answers[1]

    store.set_current("iris", 1)  # the rollback the message names
    for cache in (had_loaded_it, started_later):
        cache.refresh()
        assert cache.load("iris").version == 1


def test_a_touched_but_unchanged_artifact_keeps_serving(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = store_with_iris(tmp_path, trained, versions=1)
    cache = ModelCache(store)
    cache.load("iris")
    artifact = artifact_of(store, "iris", 1)
    artifact.write_bytes(artifact.read_bytes())  # new mtime and ctime, same bytes

    cache.refresh()

    served = cache.cached("iris")
    assert served is not None and served.version == 1


def test_a_deleted_artifact_is_refused_with_no_version_to_roll_back_to(
    tmp_path: Path, trained: TrainedModel
) -> None:
    store = store_with_iris(tmp_path, trained, versions=1)
    cache = ModelCache(store)
    cache.load("iris")
    artifact_of(store, "iris", 1).unlink()

    assert cache.refresh() == ["iris"]

    with pytest.raises(ModelUnusable, match="artifact is missing") as refused:
        cache.load("iris")
    assert refused.value.rollback_version is None
    assert "no other version is usable: train the model again" in refused.value.message
