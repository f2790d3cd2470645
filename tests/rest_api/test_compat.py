"""The fast-ml template's routes: same fields, same answer shape, real error statuses.

Every test runs twice: on the embedded default and on the Celery mode (real worker, Redis),
where /train_model waits for a Celery job.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import accuracy_score

from ML.config import Settings
from ML.datasets import DatasetLimits, read_evaluation_csv
from ML.features import Feature
from rest_api import backend as backend_module
from rest_api.backend import _in_memory_size


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


def form_body(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    """A multipart body of (name, filename or None, data) parts, as a client builds it."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


PLAIN_FORM = "multipart/form-data; boundary=b0undary"


def test_every_form_gets_the_answer_fastapi_gives(
    client: TestClient, iris_train_csv: Path, iris_test_csv: Path
) -> None:
    """The plain form is read by rest_api/upload_form.py, any other by FastAPI: the same
    accuracy for every form that carries the same fields, the same errors for the others."""
    assert post_csv(client, "/train_model", iris_train_csv)["status"] == 200
    csv = iris_test_csv.read_bytes()
    target = ("target_variable", None, b"species")
    plain = client.post(
        "/get_prediction",
        content=form_body([target, ("csv_file", "test.csv", csv)]),
        headers={"content-type": PLAIN_FORM},
    )
    assert plain.status_code == 200, plain.text
    accuracy = plain.json()
    assert accuracy["output"].startswith("Test accuracy : ")
    read_by_fastapi = {
        "file first": [("csv_file", "test.csv", csv), target],
        "another field": [target, ("comment", None, b"x"), ("csv_file", "test.csv", csv)],
        "empty filename": [target, ("csv_file", "", csv)],
    }
    for parts in read_by_fastapi.values():
        answer = client.post(
            "/get_prediction", content=form_body(parts), headers={"content-type": PLAIN_FORM}
        )
        assert (answer.status_code, answer.json()) == (200, accuracy), parts

    def chunks() -> Iterator[bytes]:  # no Content-Length: FastAPI reads it as it arrives
        yield form_body([target, ("csv_file", "test.csv", csv)])

    chunked = client.post("/get_prediction", content=chunks(), headers={"content-type": PLAIN_FORM})
    assert (chunked.status_code, chunked.json()) == (200, accuracy)

    wrong_target = form_body([("target_variable", None, b"nope"), ("csv_file", "t.csv", csv)])
    answer = client.post(
        "/get_prediction", content=wrong_target, headers={"content-type": PLAIN_FORM}
    )
    assert answer.status_code == 422 and answer.json()["code"] == 422
    assert "no column 'nope'" in answer.json()["output"]
    bad_csv = form_body([target, ("csv_file", "t.csv", b"species\n\xff\n")])
    answer = client.post("/get_prediction", content=bad_csv, headers={"content-type": PLAIN_FORM})
    assert answer.status_code == 422 and answer.json()["status"] == "error"

    no_target = form_body([("csv_file", "t.csv", csv)])
    answer = client.post("/get_prediction", content=no_target, headers={"content-type": PLAIN_FORM})
    assert answer.status_code == 422
    assert answer.json()["error"]["details"][0]["field"] == "target_variable"
    answer = client.post(
        "/get_prediction?x=1",
        content=form_body([target, ("csv_file", "t.csv", csv)]),
        headers={"content-type": PLAIN_FORM},
    )
    assert answer.status_code == 422 and "x" in answer.json()["error"]["message"]
    two_files = form_body([target, ("csv_file", "a.csv", csv), ("more", "b.csv", csv)])
    answer = client.post("/get_prediction", content=two_files, headers={"content-type": PLAIN_FORM})
    assert answer.status_code == 413


@pytest.mark.parametrize("inline_max_bytes", [0, 16 << 10])
def test_evaluation_on_the_loop_and_in_the_pool_answer_alike(
    client: TestClient,
    iris_train_csv: Path,
    iris_test_csv: Path,
    inline_max_bytes: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain form's CSV up to INLINE_EVALUATION_MAX_BYTES is evaluated on the event loop, a
    larger one (and any upload FastAPI spools) in the thread pool: the same answers, whichever
    the threshold."""
    monkeypatch.setattr(backend_module, "INLINE_EVALUATION_MAX_BYTES", inline_max_bytes)
    assert post_csv(client, "/train_model", iris_train_csv)["status"] == 200
    header, _, rows = iris_test_csv.read_bytes().partition(b"\n")
    small = header + b"\n" + rows
    large = header + b"\n" + rows * ((16 << 10) // len(rows) + 1)
    answers = []
    for csv in (small, large):
        target = ("target_variable", None, b"species")
        for parts in ([target, ("csv_file", "t.csv", csv)], [("csv_file", "t.csv", csv), target]):
            answer = client.post(
                "/get_prediction", content=form_body(parts), headers={"content-type": PLAIN_FORM}
            )
            answers.append((answer.status_code, answer.json()))
    assert answers[0][0] == 200 and answers.count(answers[0]) == 4, answers
    bad = form_body([("target_variable", None, b"nope"), ("csv_file", "t.csv", small)])
    answer = client.post("/get_prediction", content=bad, headers={"content-type": PLAIN_FORM})
    assert answer.status_code == 422 and "no column 'nope'" in answer.json()["output"]


def test_only_an_in_memory_csv_has_a_size_for_the_loop(tmp_path: Path) -> None:
    buffer = io.BytesIO(b"a,b\n1,2\n")
    buffer.read(4)
    assert _in_memory_size(buffer) == 4
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n")
    with path.open("rb") as file:
        assert _in_memory_size(file) == math.inf
