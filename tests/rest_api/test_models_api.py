"""The versioned registry over HTTP: list, inspect, promote, roll back, delete, tampering.

Every test runs twice: on the embedded default and on the Celery mode (real worker, Redis),
whose jobs commit the versions these tests promote and delete.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from testing.fastml_api import train

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def settings(any_mode_settings: Settings) -> Settings:
    return any_mode_settings


def predict_version(client: TestClient, name: str) -> int:
    answer = client.post(f"/models/{name}/predict", json={"rows": [ROW]})
    assert answer.status_code == 200, answer.text
    return answer.json()["version"]  # type: ignore[no-any-return]


def wait_for_version(client: TestClient, name: str, version: int) -> None:
    deadline = time.monotonic() + 5
    for _ in range(500):
        if predict_version(client, name) == version:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"{name} still not serving version {version}")


def test_list_get_promote_rollback_delete(
    client: TestClient, iris_model: dict[str, Any], iris_train_csv: Path
) -> None:
    train(client, "iris", iris_train_csv, estimator="logistic_regression")
    model = client.get("/models/iris").json()
    assert model["current_version"] == 2
    assert [v["version"] for v in model["versions"]] == [1, 2]
    assert all(v["is_usable"] for v in model["versions"])
    summary = client.get("/models").json()["models"]
    assert summary[0]["name"] == "iris" and summary[0]["estimator"] == "logistic_regression"
    version = client.get("/models/iris/versions/1").json()
    assert version["metadata"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert version["metadata"]["library_versions"]["sklearn"]
    assert [f["name"] for f in version["metadata"]["features"]] == list(ROW)

    wait_for_version(client, "iris", 2)
    rolled_back = client.put("/models/iris/current", json={"version": 1})
    assert rolled_back.status_code == 200 and rolled_back.json()["is_current"]
    wait_for_version(client, "iris", 1)

    assert client.delete("/models/iris/versions/1").status_code == 409
    assert client.delete("/models/iris/versions/2").status_code == 204
    assert client.get("/models/iris/versions/2").status_code == 404
    assert client.put("/models/iris/current", json={"version": 2}).status_code == 404
    assert client.delete("/models/iris").status_code == 204
    assert client.get("/models/iris").status_code == 404
    assert client.get("/models").json()["models"] == []


def test_unknown_and_invalid_names(client: TestClient) -> None:
    assert client.get("/models/nope").status_code == 404
    assert client.get("/models/nope/versions/1").status_code == 404
    assert client.post("/models/nope/predict", json={"rows": [ROW]}).status_code == 404
    for bad in ["UPPER", "-dash", "a" * 65, "a..b", "a.b", "%2e%2e"]:
        answer = client.get(f"/models/{bad}")
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["error"]["code"] == "invalid_name"
    assert client.put("/models/iris/current", json={"version": 0}).status_code == 422


def test_tampered_artifact_is_unusable_not_loaded(
    client: TestClient, iris_model: dict[str, Any], iris_train_csv: Path, settings: Settings
) -> None:
    train(client, "iris", iris_train_csv, promote="false")
    artifact = next((settings.model_dir / "iris" / "versions" / "2").glob("*.joblib"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    version = client.get("/models/iris/versions/2").json()
    assert version["is_usable"] is False
    assert "signature" in version["unusable_reason"] or "sha" in version["unusable_reason"].lower()
    answer = client.put("/models/iris/current", json={"version": 2})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "model_unusable"
    # The usable version keeps serving.
    assert predict_version(client, "iris") == 1


@pytest.mark.parametrize("version", ["02", "2.0", "%201", "-1", "+1", "1e3", "two"])
def test_version_path_parameters_are_strict_integers(client: TestClient, version: str) -> None:
    for answer in (
        client.get(f"/models/iris/versions/{version}"),
        client.delete(f"/models/iris/versions/{version}"),
    ):
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["details"][0]["field"] == "path.version"
