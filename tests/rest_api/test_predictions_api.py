"""Predictions over HTTP: JSON rows and columns, probabilities, field-level 422s, CSV, evaluate."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ML.config import Settings

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}


def test_rows_give_labels_as_trained(client: TestClient, iris_model: dict[str, Any]) -> None:
    answer = client.post("/models/iris/predict", json={"rows": [ROW, VIRGINICA]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"model": "iris", "version": 1, "predictions": ["setosa", "virginica"]}


def test_columns_and_probabilities(client: TestClient, iris_model: dict[str, Any]) -> None:
    columns = {key: [ROW[key], VIRGINICA[key]] for key in ROW}
    answer = client.post("/models/iris/predict?proba=true", json={"columns": columns})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == ["setosa", "virginica"]
    first = body["probabilities"][0]
    assert set(first) == {"setosa", "versicolor", "virginica"}
    assert abs(sum(first.values()) - 1) < 1e-9
    assert max(first, key=first.get) == "setosa"


def test_field_level_422_names_each_field(client: TestClient, iris_model: dict[str, Any]) -> None:
    bad_row = {"sepal_length": "abc", "sepal_width": True, "petal_length": 1.4, "colour": "red"}
    answer = client.post("/models/iris/predict", json={"rows": [ROW, bad_row]})
    assert answer.status_code == 422
    error = answer.json()["error"]
    problems = {(d.get("row"), d["field"]) for d in error["details"]}
    assert {(1, "sepal_length"), (1, "sepal_width"), (1, "petal_width"), (1, "colour")} <= problems
    assert (0, "sepal_length") not in problems


def test_bad_bodies_get_4xx(
    client: TestClient, iris_model: dict[str, Any], settings: Settings
) -> None:
    url = "/models/iris/predict"
    cases: list[tuple[dict[str, Any], int]] = [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ({"json": {"rows": []}}, 422),
        ({"json": {"rows": {"a": 1}}}, 422),
        ({"json": [ROW]}, 422),
        ({"json": {"rows": [ROW], "columns": {}}}, 422),
        ({"json": {"columns": {"sepal_length": [1.0]}}}, 422),
        ({"content": b"a,b", "headers": {"content-type": "text/csv"}}, 415),
        ({"json": {"rows": [ROW] * (settings.max_predict_rows + 1)}}, 413),
    ]
    for kwargs, status in cases:
        answer = client.post(url, **kwargs)
        assert answer.status_code == status, (
            kwargs.get("json", kwargs.get("content")),
            answer.text,
        )
        assert answer.json()["error"]["message"]


def test_csv_prediction_passes_columns_through_and_escapes(
    client: TestClient, iris_model: dict[str, Any]
) -> None:
    content = (
        "sepal_length,sepal_width,petal_length,petal_width,note\n"
        '5.1,3.5,1.4,0.2,=HYPERLINK("x")\n'
        "7.7,3.0,6.1,2.3,+cmd\n"
        "6.0,2.9,4.5,1.5,plain\n"
    )
    answer = client.post(
        "/models/iris/predict/csv?proba=true",
        files={"csv_file": ("in.csv", io.BytesIO(content.encode()), "text/csv")},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [row["prediction"] for row in rows[:2]] == ["setosa", "virginica"]
    assert rows[0]["note"] == '\'=HYPERLINK("x")'
    assert rows[1]["note"] == "'+cmd"
    assert rows[2]["note"] == "plain"
    assert rows[0]["sepal_length"] == "5.1"
    assert float(rows[0]["probability_setosa"]) > 0.5


def test_csv_prediction_rejects_bad_files(client: TestClient, iris_model: dict[str, Any]) -> None:
    cases = {
        b"sepal_length,sepal_width\n1,2\n": "petal_length",
        b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,x\n": "petal_width",
        b"": "empty",
    }
    for content, fragment in cases.items():
        answer = client.post(
            "/models/iris/predict/csv", files={"csv_file": ("in.csv", io.BytesIO(content))}
        )
        assert answer.status_code == 422, answer.text
        assert fragment in answer.json()["error"]["message"].lower()


def test_evaluate_gives_training_metrics(
    client: TestClient, iris_model: dict[str, Any], iris_test_csv: Path
) -> None:
    with iris_test_csv.open("rb") as file:
        answer = client.post(
            "/models/iris/evaluate",
            files={"csv_file": ("test.csv", file)},
            data={"target_variable": "species"},
        )
    assert answer.status_code == 200, answer.text
    metrics = answer.json()["metrics"]
    assert metrics["accuracy"] > 0.85
    assert len(metrics["confusion_matrix"]) == 3
    assert metrics["test_rows"] == 45 and "train_rows" not in metrics  # the file's rows
    with iris_test_csv.open("rb") as file:
        missing = client.post(
            "/models/iris/evaluate",
            files={"csv_file": ("test.csv", file)},
            data={"target_variable": "colour"},
        )
    assert missing.status_code == 422
    assert "colour" in missing.json()["error"]["message"]
