"""The fast-ml template's routes: same fields, same answer shape, real error statuses.

Every test runs twice: on the embedded default and on the Celery mode (real worker, Redis),
where /train_model waits for a Celery job.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import accuracy_score

from ML.config import Settings
from ML.datasets import DatasetLimits, read_evaluation_csv
from ML.features import Feature


@pytest.fixture
def settings(any_mode_settings: Settings) -> Settings:
    return any_mode_settings


def post_csv(client: TestClient, route: str, path: Path, target: str = "species") -> dict:
    with path.open("rb") as file:
        answer = client.post(
            route, files={"csv_file": (path.name, file)}, data={"target_variable": target}
        )
    return {"status": answer.status_code, "body": answer.json()}


def test_train_model_then_get_prediction(
    client: TestClient, settings: Settings, iris_train_csv: Path, iris_test_csv: Path
) -> None:
    trained = post_csv(client, "/train_model", iris_train_csv)
    assert trained["status"] == 200, trained
    assert trained["body"]["status"] == "success" and trained["body"]["code"] == 200
    assert re.fullmatch(r"Train accuracy : \d+\.\d\d %", trained["body"]["output"])
    assert client.get("/models/default").json()["current_version"] == 1

    predicted = post_csv(client, "/get_prediction", iris_test_csv)
    assert predicted["status"] == 200, predicted
    # scikit-learn's own accuracy of the stored pipeline on the same file.
    loaded = settings.open_model_store().load_current("default")
    schema = [Feature.from_dict(item) for item in loaded.metadata["features"]]
    features, target = read_evaluation_csv(iris_test_csv, "species", schema, DatasetLimits())
    expected = accuracy_score(target, loaded.pipeline.predict(features))
    assert predicted["body"]["output"] == f"Test accuracy : {expected * 100:.2f} %"


def test_failures_are_real_statuses_in_the_same_shape(
    client: TestClient, iris_test_csv: Path
) -> None:
    no_model = post_csv(client, "/get_prediction", iris_test_csv)
    assert no_model["status"] == 404
    assert no_model["body"]["status"] == "error" and no_model["body"]["code"] == 404

    bad = client.post(
        "/train_model",
        files={"csv_file": ("x.csv", io.BytesIO(b"a,species\n1,x\n2,x\n"))},
        data={"target_variable": "species"},
    )
    assert bad.status_code == 422
    assert bad.json()["status"] == "error"
    assert "class" in bad.json()["output"]
