"""Tests for ML/model_store.py: versions, current pointer, deletion, signatures, names, races."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import pathlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ML.errors import (
    InvalidName,
    ModelConflict,
    ModelNotFound,
    ModelUnusable,
    StorageFull,
    StoreUnavailable,
)
from ML.model_store import (
    ARTIFACT_MISMATCH,
    ARTIFACT_MISSING,
    SIGNATURE_MISMATCH,
    STORE_STATE_DIR,
    ModelStore,
    check_name,
)
from tests.tmpfs import fill_disk, small_tmpfs

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
FEATURES = np.array([[0.0, 0.1], [0.2, 0.0], [1.0, 1.1], [1.2, 0.9], [0.1, 0.2], [1.1, 1.0]])
LABELS = np.array(["setosa", "setosa", "virginica", "virginica", "setosa", "virginica"])
METADATA = {
    "metrics": {"accuracy": 1.0},
    "features": ["x1", "x2"],
    "classes": ["setosa", "virginica"],
}
SAVERS = 4
DEADLINE_SECONDS = 120.0


class TouchOnLoad:
    """A pickle payload: unpickling it creates `marker`, which proves it was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def pipeline() -> Pipeline:
    steps = [("scale", StandardScaler()), ("model", LogisticRegression())]
    return Pipeline(steps).fit(FEATURES, LABELS)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", KEY)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "unpickled.marker"


def _metadata_path(store: ModelStore, name: str, version: int) -> Path:
    return store.root_dir / name / "versions" / str(version) / "metadata.json"


def _artifact_path(store: ModelStore, name: str, version: int) -> Path:
    return store.root_dir / name / "versions" / str(version) / "model.joblib"


def _rewrite_metadata(
    store: ModelStore, name: str, version: int, change: Callable[[dict[str, Any]], None], key: bytes
) -> None:
    """Edit metadata.json and sign it again with `key`, the way the format documents it."""
    path = _metadata_path(store, name, version)
    document = json.loads(path.read_text(encoding="utf-8"))
    del document["signature"]
    change(document)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    document["signature"] = hmac.new(key, canonical, hashlib.sha256).hexdigest()
    path.write_text(json.dumps(document), encoding="utf-8")


def _try_everything(store: ModelStore, name: str) -> None:
    """Every way a client could make the store look at or load a version."""
    store.list_models()
    info = store.get_model(name)
    for version in info.versions:
        store.get_version(name, version.version)
        with pytest.raises(ModelUnusable):
            store.load_version(name, version.version)
        with pytest.raises(ModelUnusable):
            store.set_current(name, version.version)
    with pytest.raises((ModelUnusable, ModelNotFound)):
        store.load_current(name)


# -- saving, loading and versions ---------------------------------------------------------------


def test_round_trip_predicts_like_the_original(store: ModelStore, pipeline: Pipeline) -> None:
    version = store.save_version("iris", pipeline, METADATA)

    loaded = store.load_version("iris", version)

    assert (loaded.name, loaded.version) == ("iris", 1)
    assert loaded.metadata == METADATA
    assert list(loaded.pipeline.predict(FEATURES)) == list(pipeline.predict(FEATURES))
    assert store.load_current("iris").version == 1


def test_versions_increment_and_the_newest_becomes_current(
    store: ModelStore, pipeline: Pipeline
) -> None:
    versions = [store.save_version("iris", pipeline, METADATA) for _ in range(3)]

    info = store.get_model("iris")
    assert versions == [1, 2, 3]
    assert info.current_version == 3
    assert [v.version for v in info.versions] == [1, 2, 3]
    assert [v.is_current for v in info.versions] == [False, False, True]
    assert all(v.is_usable and v.unusable_reason is None for v in info.versions)
    assert all(
        v.size_bytes == _artifact_path(store, "iris", 1).stat().st_size for v in info.versions
    )
    assert info.versions[0].metadata == METADATA
    assert info.versions[0].created_at.endswith("+00:00")


def test_promote_false_keeps_the_current_version(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    store.save_version("iris", pipeline, METADATA, promote=False)

    assert store.current_version("iris") == 1
    assert store.load_current("iris").version == 1


def test_set_current_promotes_and_rolls_back(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    store.save_version("iris", pipeline, METADATA)

    rolled_back = store.set_current("iris", 1)

    assert rolled_back.version == 1 and rolled_back.is_current
    assert store.current_version("iris") == 1
    assert (store.root_dir / "iris" / "current").read_text().strip() == "1"
    assert store.get_version("iris", 2).is_current is False
    assert store.set_current("iris", 2).is_current
    assert store.load_current("iris").version == 2


def test_unknown_versions_and_models_are_named(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    store.save_version("iris", pipeline, METADATA)

    for version in (0, -1, 7):
        with pytest.raises(ModelNotFound, match=r"model 'iris' has no version .*versions 1, 2"):
            store.get_version("iris", version)
    with pytest.raises(ModelNotFound, match="versions 1, 2"):
        store.set_current("iris", 7)
    with pytest.raises(ModelNotFound, match="versions 1, 2"):
        store.load_version("iris", 7)
    for call in (
        lambda: store.get_model("nope"),
        lambda: store.get_version("nope", 1),
        lambda: store.current_version("nope"),
        lambda: store.load_current("nope"),
        lambda: store.delete_model("nope"),
        lambda: store.delete_version("nope", 1),
    ):
        with pytest.raises(ModelNotFound, match="model 'nope' not found"):
            call()


def test_load_current_without_a_current_version(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA, promote=False)

    assert store.current_version("iris") is None
    assert store.get_model("iris").current_version is None
    with pytest.raises(ModelNotFound, match="no current version; promote one of versions 1"):
        store.load_current("iris")


def test_metadata_with_numpy_values_is_stored_as_json(
    store: ModelStore, pipeline: Pipeline
) -> None:
    metadata = {"accuracy": np.float64(0.5), "confusion_matrix": np.array([[1, 0], [0, 1]])}

    store.save_version("iris", pipeline, metadata)

    assert store.load_current("iris").metadata == {
        "accuracy": 0.5,
        "confusion_matrix": [[1, 0], [0, 1]],
    }
    with pytest.raises(TypeError, match="JSON-serializable"):
        store.save_version("iris", pipeline, {"estimator": object()})
    assert [v.version for v in store.get_model("iris").versions] == [1]


# -- deletion ------------------------------------------------------------------------------------


def test_delete_a_version_that_is_not_current(store: ModelStore, pipeline: Pipeline) -> None:
    for _ in range(3):
        store.save_version("iris", pipeline, METADATA)

    store.delete_version("iris", 1)

    assert [v.version for v in store.get_model("iris").versions] == [2, 3]
    with pytest.raises(ModelNotFound, match="versions 2, 3"):
        store.load_version("iris", 1)


def test_deleting_the_current_version_needs_another_promoted_first(
    store: ModelStore, pipeline: Pipeline
) -> None:
    store.save_version("iris", pipeline, METADATA)
    store.save_version("iris", pipeline, METADATA)

    with pytest.raises(ModelConflict, match="promote another version first"):
        store.delete_version("iris", 2)

    store.set_current("iris", 1)
    store.delete_version("iris", 2)
    assert [v.version for v in store.get_model("iris").versions] == [1]


def test_deleting_the_only_version_deletes_the_model(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)

    store.delete_version("iris", 1)

    with pytest.raises(ModelNotFound):
        store.get_model("iris")
    assert store.list_models() == []


def test_delete_model_removes_every_file(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    store.save_version("iris", pipeline, METADATA)
    store.save_version("other", pipeline, METADATA)

    store.delete_model("iris")

    assert [m.name for m in store.list_models()] == ["other"]
    assert sorted(p.name for p in store.root_dir.iterdir()) == [STORE_STATE_DIR, "other"]
    with pytest.raises(ModelNotFound):
        store.current_version("iris")


def test_version_numbers_are_never_reused(store: ModelStore, pipeline: Pipeline) -> None:
    # Workers cache loaded models by (name, version), so a number must never mean two models.
    store.save_version("iris", pipeline, METADATA)
    store.save_version("iris", pipeline, METADATA, promote=False)
    store.delete_version("iris", 2)
    assert store.save_version("iris", pipeline, METADATA) == 3

    store.delete_model("iris")
    assert store.save_version("iris", pipeline, METADATA) == 4
    assert [v.version for v in store.get_model("iris").versions] == [4]


# -- integrity: nothing unverified is ever unpickled ---------------------------------------------


def test_flipped_artifact_byte_makes_the_version_unusable(
    store: ModelStore, pipeline: Pipeline
) -> None:
    store.save_version("iris", pipeline, METADATA)
    artifact = _artifact_path(store, "iris", 1)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))

    info = store.get_version("iris", 1)

    assert (info.is_usable, info.unusable_reason) == (False, ARTIFACT_MISMATCH)
    with pytest.raises(ModelUnusable, match="does not match its signed SHA-256"):
        store.load_current("iris")


def test_unusable_current_versions_name_the_newest_usable_version(
    store: ModelStore, pipeline: Pipeline
) -> None:
    for _ in range(3):
        store.save_version("iris", pipeline, METADATA)
    store.save_version("other", pipeline, METADATA)
    assert store.unusable_current_versions() == {}
    for version in (2, 3):
        artifact = _artifact_path(store, "iris", version)
        artifact.write_bytes(artifact.read_bytes()[:-1])  # truncated

    unusable = store.unusable_current_versions()

    assert list(unusable) == ["iris"]
    assert unusable["iris"].rollback_version == 1
    assert unusable["iris"].message == (
        f"model 'iris' version 3 is unusable: {ARTIFACT_MISMATCH}; "
        "version 1 is the newest usable one: make it current to roll back"
    )


def test_payload_signed_with_another_key_is_never_unpickled(tmp_path: Path, marker: Path) -> None:
    root_dir = tmp_path / "models"
    ModelStore(root_dir, OTHER_KEY).save_version("evil", TouchOnLoad(marker), {})
    store = ModelStore(root_dir, KEY)

    _try_everything(store, "evil")

    assert store.get_version("evil", 1).unusable_reason == SIGNATURE_MISMATCH
    assert not marker.exists()
    # The control: the key that signed it does load it, so the payload is live.
    ModelStore(root_dir, OTHER_KEY).load_version("evil", 1)
    assert marker.exists()


def test_edited_metadata_makes_the_version_unusable(store: ModelStore, marker: Path) -> None:
    store.save_version("evil", TouchOnLoad(marker), {"accuracy": 0.5})
    path = _metadata_path(store, "evil", 1)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["metadata"]["accuracy"] = 0.99
    path.write_text(json.dumps(document), encoding="utf-8")

    _try_everything(store, "evil")

    info = store.get_version("evil", 1)
    assert (info.is_usable, info.unusable_reason) == (False, SIGNATURE_MISMATCH)
    assert not marker.exists()


def test_another_secret_makes_every_version_unusable(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    other = ModelStore(store.root_dir, OTHER_KEY)

    [info] = other.list_models()

    assert info.versions[0].unusable_reason == SIGNATURE_MISMATCH
    with pytest.raises(ModelUnusable, match="signed with another FASTML_SECRET_KEY"):
        other.load_current("iris")


def test_foreign_sklearn_version_is_refused_before_unpickling(
    store: ModelStore, marker: Path
) -> None:
    store.save_version("evil", TouchOnLoad(marker), {})
    _rewrite_metadata(
        store, "evil", 1, lambda document: document.update(sklearn_version="1.4.2"), KEY
    )

    _try_everything(store, "evil")

    expected = (
        f"trained with scikit-learn 1.4.2 but this server runs {sklearn.__version__}; "
        "retrain the model"
    )
    assert store.get_version("evil", 1).unusable_reason == expected
    with pytest.raises(ModelUnusable, match="retrain the model"):
        store.load_version("evil", 1)
    assert not marker.exists()


def test_missing_artifact_is_reported(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    _artifact_path(store, "iris", 1).unlink()

    info = store.get_version("iris", 1)

    assert (info.is_usable, info.unusable_reason, info.size_bytes) == (False, ARTIFACT_MISSING, 0)
    with pytest.raises(ModelUnusable, match="artifact is missing"):
        store.load_version("iris", 1)


def test_a_signed_version_copied_elsewhere_is_unusable(
    store: ModelStore, pipeline: Pipeline
) -> None:
    store.save_version("good", pipeline, METADATA)
    store.save_version("other", pipeline, METADATA)
    for file_name in ("model.joblib", "metadata.json"):
        source = _artifact_path(store, "good", 1).with_name(file_name)
        _artifact_path(store, "other", 1).with_name(file_name).write_bytes(source.read_bytes())

    reason = store.get_version("other", 1).unusable_reason

    assert reason is not None and "stored as model 'other' version 1" in reason


def test_corrupt_metadata_json_is_unusable(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    _metadata_path(store, "iris", 1).write_text("{not json", encoding="utf-8")

    info = store.get_version("iris", 1)

    assert info.is_usable is False and info.unusable_reason is not None
    assert "not valid JSON" in info.unusable_reason


# -- names and layout ----------------------------------------------------------------------------

INVALID_NAMES = ["../x", "A", "a/b", "", "a" * 65, "abc\n", "-a", "_a", ".", "..", "é", "a b"]
CALLS: dict[str, Callable[[ModelStore, str], object]] = {
    "save_version": lambda store, name: store.save_version(name, None, {}),
    "list_via_get_model": lambda store, name: store.get_model(name),
    "get_version": lambda store, name: store.get_version(name, 1),
    "current_version": lambda store, name: store.current_version(name),
    "set_current": lambda store, name: store.set_current(name, 1),
    "delete_model": lambda store, name: store.delete_model(name),
    "delete_version": lambda store, name: store.delete_version(name, 1),
    "load_version": lambda store, name: store.load_version(name, 1),
    "load_current": lambda store, name: store.load_current(name),
}


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_refused_by_every_method(store: ModelStore, name: str) -> None:
    with pytest.raises(InvalidName, match="is invalid; use 1-64 characters a-z 0-9 _ -"):
        check_name(name)
    for call in CALLS.values():
        with pytest.raises(InvalidName):
            call(store, name)
    assert sorted(p.name for p in store.root_dir.iterdir()) == [STORE_STATE_DIR]


@pytest.mark.parametrize("name", ["a", "0", "iris", "iris_v2-b", "a" * 64])
def test_valid_names_are_accepted(store: ModelStore, pipeline: Pipeline, name: str) -> None:
    assert check_name(name) == name
    store.save_version(name, pipeline, METADATA)
    assert [m.name for m in store.list_models()] == [name]


def test_incomplete_version_dirs_are_ignored(store: ModelStore, pipeline: Pipeline) -> None:
    store.save_version("iris", pipeline, METADATA)
    incomplete = store.root_dir / "iris" / "versions" / "2"
    incomplete.mkdir()
    incomplete.joinpath("model.joblib").write_bytes(b"half written")
    half_model = store.root_dir / "half" / "versions" / "1"
    half_model.mkdir(parents=True)

    assert [m.name for m in store.list_models()] == ["iris"]
    assert [v.version for v in store.get_model("iris").versions] == [1]
    with pytest.raises(ModelNotFound, match=r"versions 1$"):
        store.load_version("iris", 2)
    with pytest.raises(ModelNotFound, match=r"versions 1$"):
        store.set_current("iris", 2)
    with pytest.raises(ModelNotFound):
        store.get_model("half")
    # The reserved number stays taken: a writer may still be finishing it.
    assert store.save_version("iris", pipeline, METADATA) == 3


def test_list_models_ignores_entries_that_are_not_model_names(
    store: ModelStore, pipeline: Pipeline
) -> None:
    store.save_version("iris", pipeline, METADATA)
    (store.root_dir / "_state").mkdir()
    (store.root_dir / ".gitkeep").touch()
    (store.root_dir / "UPPER" / "versions" / "1").mkdir(parents=True)
    (store.root_dir / "notadir").write_text("x")

    assert [m.name for m in store.list_models()] == ["iris"]


# -- concurrency ---------------------------------------------------------------------------------


def _save_after_barrier(root_dir: str, pipeline: Pipeline, barrier: Any, results: Any) -> None:
    store = ModelStore(Path(root_dir), KEY)
    barrier.wait(timeout=DEADLINE_SECONDS)
    results.put(store.save_version("iris", pipeline, METADATA))


def test_concurrent_saves_from_processes_get_distinct_versions(
    store: ModelStore, pipeline: Pipeline
) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(SAVERS)
    results = context.Queue()
    processes = [
        context.Process(
            target=_save_after_barrier, args=(str(store.root_dir), pipeline, barrier, results)
        )
        for _ in range(SAVERS)
    ]
    for process in processes:
        process.start()
    try:
        versions = [results.get(timeout=DEADLINE_SECONDS) for _ in range(SAVERS)]
    finally:
        for process in processes:
            process.join(timeout=DEADLINE_SECONDS)
            if process.is_alive():
                process.kill()

    assert sorted(versions) == [1, 2, 3, 4]
    info = store.get_model("iris")
    assert [v.version for v in info.versions] == [1, 2, 3, 4]
    assert all(v.is_usable for v in info.versions)
    assert info.current_version in versions
    assert all(store.load_version("iris", v).version == v for v in versions)


# -- staged versions, a full disk, a store that went away ---------------------------------------


def test_a_staged_version_is_invisible_until_committed(
    store: ModelStore, pipeline: Pipeline
) -> None:
    store.save_version("iris", pipeline, METADATA)
    staged = store.stage_version("iris", pipeline, METADATA, promote=True)

    assert [v.version for v in store.get_model("iris").versions] == [1]
    assert store.current_version("iris") == 1
    assert store.commit_staged(staged, lambda: True)
    assert store.current_version("iris") == staged.version == 2
    assert store.staged_versions() == []


def test_a_refused_commit_discards_the_staged_version(
    store: ModelStore, pipeline: Pipeline
) -> None:
    store.save_version("iris", pipeline, METADATA)
    staged = store.stage_version("iris", pipeline, METADATA, promote=True)

    assert not store.commit_staged(staged, lambda: False)

    assert [v.version for v in store.get_model("iris").versions] == [1]
    assert store.current_version("iris") == 1
    assert not (store.root_dir / "iris" / "versions" / "2").exists()
    assert store.staged_versions() == []


def test_recovery_publishes_a_staged_version_without_moving_current_back(
    store: ModelStore, pipeline: Pipeline
) -> None:
    staged = store.stage_version("iris", pipeline, {**METADATA, "job_id": "j"}, promote=True)
    store.save_version("iris", pipeline, METADATA)  # version 2, current

    [found] = store.staged_versions()
    assert (found.name, found.version, found.promote) == ("iris", staged.version, True)
    assert found.metadata["job_id"] == "j"
    assert store.commit_staged(found, lambda: True, is_recovery=True)

    assert [v.version for v in store.get_model("iris").versions] == [1, 2]
    assert store.current_version("iris") == 2


def test_a_full_disk_fails_the_save_naming_the_store_and_leaves_nothing(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        store = ModelStore(disk / "models", KEY)
        store.save_version("iris", pipeline, METADATA)
        filler = fill_disk(disk, leave_bytes=64 * 1024)
        too_big = np.zeros(1_000_000)  # 8 MB of pickle on a 4 MB disk

        with pytest.raises(StorageFull, match=f"no space left in the model store at {disk}"):
            store.save_version("iris", too_big, METADATA)

        assert [v.version for v in store.get_model("iris").versions] == [1]
        assert store.current_version("iris") == 1
        assert sorted(p.name for p in (disk / "models" / "iris" / "versions").iterdir()) == ["1"]
        filler.unlink()
        assert store.save_version("iris", pipeline, METADATA) == 2


def test_a_store_moved_away_is_unavailable_not_empty_and_is_not_recreated(
    store: ModelStore, pipeline: Pipeline, tmp_path: Path
) -> None:
    store.save_version("iris", pipeline, METADATA)
    moved = tmp_path / "moved"
    store.root_dir.rename(moved)

    assert not store.is_available()
    for read in (
        store.list_models,
        lambda: store.get_model("iris"),
        lambda: store.current_version("iris"),
        lambda: store.load_current("iris"),
    ):
        with pytest.raises(StoreUnavailable, match="missing or unreadable"):
            read()
    with pytest.raises(StoreUnavailable):
        store.save_version("iris", pipeline, METADATA)
    opened_meanwhile = ModelStore(store.root_dir, KEY, create=False)  # a worker starting
    with pytest.raises(StoreUnavailable):
        opened_meanwhile.list_models()
    assert not store.root_dir.exists()

    moved.rename(store.root_dir)
    assert store.current_version("iris") == 1
    assert opened_meanwhile.load_current("iris").version == 1
