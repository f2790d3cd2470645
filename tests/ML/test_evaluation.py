"""Tests for ML/evaluation.py and ML/plain_csv.py: the fast evaluation gives scikit-learn's own
figures, and the plain reader gives what the checked reader gives, or steps aside."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from ML.datasets import DatasetLimits, read_evaluation_csv, read_labelled_csv
from ML.errors import FastMLError, InvalidDataset
from ML.evaluation import Scores, evaluate_csv, read_evaluation_input
from ML.model_store import LoadedModel
from ML.plain_csv import read_plain_evaluation_csv
from ML.prediction import ServedModel, predict_arrays
from ML.training import TrainingOptions, train_model
from tests.iris import IRIS_DIR

LIMITS = DatasetLimits()


def served(csv: Path | bytes, target: str, cv: int | None = None, **params: Any) -> ServedModel:
    """A model trained on `csv` (on every row with cv), ready to serve."""
    source = io.BytesIO(csv) if isinstance(csv, bytes) else csv
    dataset = read_labelled_csv(source, target, LIMITS)
    trained = train_model(dataset, TrainingOptions(params=params, cv=cv))
    return ServedModel(LoadedModel("m", 1, trained.pipeline, trained.metadata))


@pytest.fixture(scope="module")
def iris_model() -> ServedModel:
    return served(IRIS_DIR / "train.csv", "species", n_estimators=25)


def sklearn_metrics(model: ServedModel, csv: Path) -> dict[str, Any]:
    """scikit-learn's own figures: its pipeline on the checked reader's frame."""
    features, target = read_evaluation_csv(csv, "species", model.schema, LIMITS)
    predicted = model.pipeline.predict(features)
    probabilities = model.pipeline.predict_proba(features)
    precision, recall, f1, _ = precision_recall_fscore_support(
        target, predicted, average="macro", zero_division=0
    )
    classes = model.pipeline.classes_
    return {
        "accuracy": accuracy_score(target, predicted),
        "precision_macro": precision,
        "recall_macro": recall,
        "f1_macro": f1,
        "roc_auc": roc_auc_score(target, probabilities, multi_class="ovr", labels=classes),
        "confusion_matrix": confusion_matrix(target, predicted, labels=classes).tolist(),
    }


def test_scores_are_scikit_learns_on_the_same_file(iris_model: ServedModel) -> None:
    csv = IRIS_DIR / "test.csv"
    expected = sklearn_metrics(iris_model, csv)
    metrics = evaluate_csv(iris_model, csv, "species", LIMITS)
    assert {key: metrics[key] for key in expected} == expected
    assert metrics["labels"] == ["setosa", "versicolor", "virginica"]
    assert metrics["test_rows"] == 45
    only = evaluate_csv(iris_model, csv, "species", LIMITS, Scores.ACCURACY)
    assert only == {"accuracy": expected["accuracy"]}


def test_labels_are_scikit_learns_on_ties() -> None:
    # Each x value holds as many b as c labels (and, for odd x, one a): leaves that cannot
    # split them give b and c the same probability, and sklearn's predict picks the first.
    rows = [f"{x},{x % 3},{label}" for x in range(10) for label in "bc" * 3 + "a" * (x % 2)]
    content = ("x,y,label\n" + "\n".join(rows) + "\n").encode()
    model = served(content, "label", cv=2, n_estimators=4, bootstrap=False)
    assert model.compiled is not None
    inputs, target = read_evaluation_input(model, io.BytesIO(content), "label", LIMITS)
    assert isinstance(inputs, np.ndarray)  # the plain reader took it
    probabilities = model.pipeline.predict_proba(pd.DataFrame(inputs, columns=["x", "y"]))
    top = np.sort(probabilities, axis=1)
    assert (top[:, -1] == top[:, -2]).sum() > 20  # the test is about ties: there must be some
    labels, _ = predict_arrays(model, inputs, with_probabilities=False)
    expected = model.pipeline.predict(pd.DataFrame(inputs, columns=["x", "y"]))
    assert labels.tolist() == expected.tolist()
    metrics = evaluate_csv(model, io.BytesIO(content), "label", LIMITS)
    assert metrics["accuracy"] == accuracy_score(target, expected)
    assert metrics["confusion_matrix"] == confusion_matrix(target, expected).tolist()


def read_both(model: ServedModel, content: bytes, target: str) -> tuple[Any, Any]:
    """(fast path's answer, the checked reader's answer): arrays, or the error raised."""
    answers = []
    for reader in ("fast", "checked"):
        try:
            if reader == "fast":
                inputs, labels = read_evaluation_input(model, io.BytesIO(content), target, LIMITS)
            else:
                frame, series = read_evaluation_csv(
                    io.BytesIO(content), target, model.schema, LIMITS
                )
                inputs, labels = frame.to_numpy(dtype=np.float64), series.to_numpy()
            answers.append((np.asarray(inputs, dtype=np.float64), labels))
        except FastMLError as exc:
            answers.append((type(exc), exc.message))
    return answers[0], answers[1]


@pytest.fixture(scope="module")
def small_model() -> ServedModel:
    content = b"a,b,y\n" + b"".join(f"{i},{i % 3},{i % 2}\n".encode() for i in range(40))
    return served(content, "y", n_estimators=3)


PLAIN_CASES = [
    b"a,b,y\n1,2,0\n3.5,-4,1\n",
    b"a,b,y\n1,2,cat\n3,4,dog\n",
    b"a,b,y\n1,2,1\n3,4,cat\n",  # numbers and text: the whole column is text
    b"y,b,a,extra\n0,2,1,zz\n1,4,3,yy\n",  # other order, an extra column
    b"\xef\xbb\xbfa,b,y\r\n1,2,0\r\n3,4,1\r\n",  # BOM and CRLF
    b"a,b,y\n5.,.5,0\n+1,-0,1\n,NA,1\n",  # decimal forms and missing cells
    b"a,b,y\n1,2,0\n3,4,1",  # no final line end
    # Cells the one float() pass steps aside for (a sign beyond 16 characters, a missing
    # cell), read cell by cell:
    b"a,b,y\n-123456789.012345,2,0\n3,4,1\n",
    b"a,b,y\n+.5,-5.,0\n,4,1\n",
]
GENERAL_CASES = [
    b"a,b,y\n1,2,01\n3,4,1\n",  # pandas reads 01 as the number 1
    b"a,b,y\n1,2,1.0\n3,4,0\n",
    b"a,b,y\n1,2,True\n3,4,False\n",
    b"a,b,y\n1,2,NA\n3,4,cat\n",  # a missing label: the checked reader says where
    b"a,b,y\n1e3,2,0\n3,4,1\n",
    b"a,b,y\n1234567890.1234567,2,0\n3,4,1\n",
    b'a,b,y\n"1",2,0\n3,4,1\n',
    b"a,b,y\n1,2,0\n\n3,4,1\n",
    b"a,b,y\n1,2,0\n3,4\n",
    b"a,b,b,y\n1,2,3,0\n",
    b"a,,y\n1,2,0\n",
    b"a,b,y\n1,x,0\n",
    b"a,b,y\n1, 2,0\n",
    b"a,b,y\n1,inf,0\n",
    b"a,b,y\n",
    b"a,b\n1,2\n",
    b"a,b,y\n1,2,cat\r3,4,dog\n",
    b"a,b,y\n1,2,\xff\n",
    # Only "0-9.+-", yet no decimal, or too long for one:
    b"a,b,y\n1-2,2,0\n3,4,1\n",
    b"a,b,y\n+,2,0\n3,4,1\n",
    b"a,b,y\n.,2,0\n3,4,1\n",
    b"a,b,y\n1.2.3,2,0\n3,4,1\n",
    b"a,b,y\n--1,2,0\n3,4,1\n",
    b"a,b,y\n12345678901234567,2,0\n3,4,1\n",
]


@pytest.mark.parametrize("content", PLAIN_CASES + GENERAL_CASES)
def test_the_fast_reader_gives_what_the_checked_reader_gives(
    small_model: ServedModel, content: bytes
) -> None:
    fast, checked = read_both(small_model, content, "y")
    if isinstance(checked[0], type):
        assert fast == checked
        return
    np.testing.assert_array_equal(fast[0], checked[0])
    assert fast[1].dtype == checked[1].dtype
    assert fast[1].tolist() == checked[1].tolist()
    is_plain = read_plain_evaluation_csv(content, "y", small_model.schema, LIMITS) is not None
    assert is_plain == (content in PLAIN_CASES)


def test_short_decimals_parse_as_pandas_parses_them(small_model: ServedModel) -> None:
    generator = random.Random(1)
    cells = []
    for _ in range(20_000):
        digits = "".join(generator.choice("0123456789") for _ in range(generator.randint(1, 15)))
        cut = generator.randint(0, len(digits))
        cell = f"{digits[:cut]}.{digits[cut:]}" if generator.random() < 0.8 else digits
        cells.append(("-" if generator.random() < 0.3 else "") + (cell if cell != "." else "0"))
    for start in range(0, len(cells), 5_000):  # files small enough for the plain reader
        part = cells[start : start + 5_000]
        content = ("a,b,y\n" + "".join(f"{cell},{cell},0\n" for cell in part)).encode()
        assert read_plain_evaluation_csv(content, "y", small_model.schema, LIMITS) is not None
        fast, checked = read_both(small_model, content, "y")
        np.testing.assert_array_equal(fast[0], checked[0])


def test_text_labels_against_a_numeric_model_are_a_clear_error(small_model: ServedModel) -> None:
    for scores in Scores:
        with pytest.raises(InvalidDataset, match="labels in the CSV are text"):
            evaluate_csv(small_model, io.BytesIO(b"a,b,y\n1,2,cat\n"), "y", LIMITS, scores)
