"""Tests for CSV prediction (ML/prediction.py write_predictions_csv): passthrough, escaping,
errors in late chunks, and bounded memory, on real models trained on tiny data."""

from __future__ import annotations

import csv
import io
import math
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from ML.config import PROJECT_DIR
from ML.datasets import DatasetLimits, read_labelled_csv
from ML.errors import InvalidDataset, InvalidInput
from ML.json_input import frame_from_rows
from ML.model_store import LoadedModel
from ML.prediction import ServedModel, predict, write_predictions_csv
from ML.training import TrainingOptions, train_model
from tests.ML.samples import mixed_rows

IRIS_TRAIN_CSV = PROJECT_DIR / "ML" / "data" / "train.csv"
IRIS_HEADER = "sepal_length,sepal_width,petal_length,petal_width"
IRIS_ROWS = ["5.1,3.5,1.4,0.2", "7.7,3.0,6.1,2.3", "6.0,2.9,4.5,1.5", "6.3,3.3,6.0,2.5"]
LABELS = {"setosa", "versicolor", "virginica"}


def served(path: Path, target: str) -> ServedModel:
    dataset = read_labelled_csv(path, target, DatasetLimits())
    trained = train_model(dataset, TrainingOptions(params={"n_estimators": 10}))
    return ServedModel(LoadedModel(path.stem, 1, trained.pipeline, trained.metadata))


@pytest.fixture(scope="module")
def iris() -> ServedModel:
    """All-numeric features: predicted by the compiled forest."""
    return served(IRIS_TRAIN_CSV, "species")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """size (numeric), color (categorical), flag (True/False): predicted by scikit-learn."""
    path = tmp_path_factory.mktemp("mixed") / "mixed.csv"
    path.write_text("\n".join(["size,color,flag,label", *mixed_rows(60)]) + "\n")
    return served(path, "label")


def predict_csv(
    model: ServedModel, content: str | bytes, *, chunk_rows: int = 2, proba: bool = False
) -> bytes:
    data = content.encode() if isinstance(content, str) else content
    target = io.BytesIO()
    rows = write_predictions_csv(
        model, io.BytesIO(data), target, with_probabilities=proba, chunk_rows=chunk_rows
    )
    output = target.getvalue()
    assert rows == len(parse(output)) - 1
    return output


def parse(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True))


# ---------------------------------------------------------------------------------------------
# Passthrough
# ---------------------------------------------------------------------------------------------

PASSTHROUGH_CSV = (
    f"{IRIS_HEADER},species,note\r\n"
    '5.1,3.5,1.4,0.2,setosa,"a, b"\r\n'
    '7.7,3.0,6.1,2.3,virginica,"say ""hi"", then"\r\n'
    "6.0,2.9,4.5,1.5,versicolor,plain\r\n"
    '6.3,3.3,6.0,2.5,virginica,"two\nlines"\r\n'
    '5.0,3.4,1.5,0.2,setosa,"crlf\r\ninside"\r\n'
    "5.9,3.0,5.1,1.8,,\r\n"
    "5.7,2.8,4.1,1.3,versicolor,café ✓ 日本 🙂\r\n"
    "4.9,3.1,1.5,0.1,setosa,  spaced out  \r\n"
    '6.7,3.1,4.4,1.4,"versicolor",""\r\n'
    "6.5,3.0,5.2,2.0,virginica,tab\there\r\n"
)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1_000])
def test_every_input_cell_survives_the_round_trip(iris: ServedModel, chunk_rows: int) -> None:
    output = predict_csv(iris, PASSTHROUGH_CSV, chunk_rows=chunk_rows)

    rows = parse(output)
    assert rows[0] == [*IRIS_HEADER.split(","), "species", "note", "prediction"]
    assert [row[:-1] for row in rows[1:]] == parse(PASSTHROUGH_CSV.encode())[1:]
    assert all(row[-1] in LABELS for row in rows[1:])
    assert output.endswith(b"\r\n")


def test_plain_records_are_written_as_they_came_with_crlf(iris: ServedModel) -> None:
    content = f"{IRIS_HEADER},id\n5.1,3.5,1.4,0.2,007\n7.7,3.0,6.1,2.3, x \n"

    output = predict_csv(iris, content)

    assert (
        output
        == (
            f"{IRIS_HEADER},id,prediction\r\n"
            "5.1,3.5,1.4,0.2,007,setosa\r\n"
            "7.7,3.0,6.1,2.3, x ,virginica\r\n"
        ).encode()
    )


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_line_ends_and_a_missing_last_line_end_give_the_same_answer(
    iris: ServedModel, line_end: str
) -> None:
    content = line_end.join([IRIS_HEADER, *IRIS_ROWS])

    assert predict_csv(iris, content) == predict_csv(iris, "\n".join([IRIS_HEADER, *IRIS_ROWS]))


def test_quoted_cells_predict_like_unquoted_ones(iris: ServedModel) -> None:
    plain = "\n".join([IRIS_HEADER, *IRIS_ROWS]) + "\n"
    quoted = "\n".join(
        [IRIS_HEADER, *[",".join(f'"{cell}"' for cell in row.split(",")) for row in IRIS_ROWS]]
    )

    assert predict_csv(iris, quoted, chunk_rows=3) == predict_csv(iris, plain, chunk_rows=3)


def test_csv_predictions_equal_json_predictions(mixed: ServedModel) -> None:
    cells = [("3", "red", "True"), ("", "blue", "False"), ("9", "NA", "True"), ("NA", "", "False")]
    content = "size,color,flag,id\n" + "".join(
        f"{s},{c},{f},{i}\n" for i, (s, c, f) in enumerate(cells)
    )
    json_rows: list[dict[str, Any]] = [
        {
            "size": float(size) if size not in ("", "NA") else None,
            "color": color if color not in ("", "NA") else None,
            "flag": flag,
        }
        for size, color, flag in cells
    ]

    rows = parse(predict_csv(mixed, content, chunk_rows=3, proba=True))

    expected = predict(mixed, frame_from_rows(json_rows, mixed.schema), with_probabilities=True)
    assert [row[4] for row in rows[1:]] == [str(label) for label in expected.labels]
    assert expected.probabilities is not None
    keys = [name.removeprefix("probability_") for name in rows[0][5:]]
    assert [dict(zip(keys, map(float, row[5:]), strict=True)) for row in rows[1:]] == [
        {key: probabilities[key] for key in keys} for probabilities in expected.probabilities
    ]


def test_probabilities_are_written_as_floats_in_class_order(iris: ServedModel) -> None:
    output = predict_csv(iris, "\n".join([IRIS_HEADER, *IRIS_ROWS]), proba=True)

    rows = parse(output)
    assert rows[0][4:] == [
        "prediction",
        "probability_setosa",
        "probability_versicolor",
        "probability_virginica",
    ]
    for row in rows[1:]:
        probabilities = [float(cell) for cell in row[5:]]
        assert all(cell == repr(value) for cell, value in zip(row[5:], probabilities, strict=True))
        assert math.isclose(sum(probabilities), 1.0)
        best = max(range(3), key=lambda index: probabilities[index])
        assert row[4] == ["setosa", "versicolor", "virginica"][best]


# ---------------------------------------------------------------------------------------------
# Formula injection
# ---------------------------------------------------------------------------------------------

# (cell as written, cell in the answer): text a spreadsheet would run gets a leading quote; a
# plain number is data and stays as it is.
NOTES = [
    ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
    ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
    ("+cmd", "'+cmd"),
    ("-cmd", "'-cmd"),
    ("@sum", "'@sum"),
    ("\tx", "'\tx"),
    ("-", "'-"),
    ("--1", "'--1"),
    ("-1+2", "'-1+2"),
    ("-inf", "'-inf"),
    ("a=b", "a=b"),
    ("-1.5", "-1.5"),
    ("+1e5", "+1e5"),
    ("-.5", "-.5"),
    ("-2E-3", "-2E-3"),
    ("7", "7"),
]


@pytest.mark.parametrize("is_quoted", [False, True], ids=["unquoted", "quoted"])
def test_formula_cells_are_escaped_and_numbers_are_not(iris: ServedModel, is_quoted: bool) -> None:
    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if is_quoted or '"' in text else text

    lines = [f"{IRIS_HEADER},note,=cmd"]
    lines += [f"-1.5,3.0,+1e0,0.2,{cell(note)},x" for note, _ in NOTES]

    rows = parse(predict_csv(iris, "\n".join(lines), chunk_rows=4))

    assert rows[0] == [*IRIS_HEADER.split(","), "note", "'=cmd", "prediction"]
    assert [row[4] for row in rows[1:]] == [escaped for _, escaped in NOTES]
    assert {tuple(row[:4]) for row in rows[1:]} == {("-1.5", "3.0", "+1e0", "0.2")}


def test_a_cell_starting_with_cr_is_escaped(iris: ServedModel) -> None:
    rows = parse(predict_csv(iris, f'{IRIS_HEADER},note\n5.1,3.5,1.4,0.2,"\rx"\n'))

    assert rows[1][4] == "'\rx"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_a_bad_number_in_a_late_chunk_names_its_row(iris: ServedModel) -> None:
    rows = [IRIS_ROWS[index % 4] for index in range(30)]
    rows[26] = "5.1,abc,1.4,0.2"

    with pytest.raises(InvalidInput) as caught:
        predict_csv(iris, "\n".join([IRIS_HEADER, *rows]), chunk_rows=5)

    assert "column 'sepal_width'" in caught.value.message
    assert "row 27 " in caught.value.message
    assert caught.value.details == [
        {
            "row": 27,
            "field": "sepal_width",
            "error": "must be a finite number or empty, got the string 'abc'",
        }
    ]


def test_a_ragged_row_after_multiline_cells_names_its_line(iris: ServedModel) -> None:
    rows = [f"{IRIS_ROWS[0]},plain"] * 6 + [f'{IRIS_ROWS[1]},"two\nlines"', IRIS_ROWS[2]]
    content = "\n".join([f"{IRIS_HEADER},note", *rows])

    with pytest.raises(InvalidDataset, match="line 10 has 4 fields but the header has 5"):
        predict_csv(iris, content, chunk_rows=3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            "sepal_length,sepal_width,petal_length\n1,2,3\n",
            "lacks features the model needs: petal_width",
            id="missing-feature",
        ),
        pytest.param(
            f"{IRIS_HEADER},prediction\n{IRIS_ROWS[0]},x\n", "already has column", id="clash"
        ),
    ],
)
def test_missing_features_and_clashing_columns_are_refused(
    iris: ServedModel, content: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        predict_csv(iris, content)


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


class FirstWriteProbe(io.BytesIO):
    """A sink that keeps nothing and records how far `source` had been read at the first write."""

    def __init__(self, source: io.BytesIO) -> None:
        super().__init__()
        self.source = source
        self.read_at_first_write: int | None = None

    def write(self, data: Any) -> int:
        if self.read_at_first_write is None:
            self.read_at_first_write = self.source.tell()
        return len(data)


def iris_bytes(rows: int) -> bytes:
    body = "".join(f"{IRIS_ROWS[index % 4]},{index}\n" for index in range(rows))
    return f"{IRIS_HEADER},id\n{body}".encode()


def test_output_starts_before_the_input_is_read_to_the_end(iris: ServedModel) -> None:
    data = iris_bytes(120_000)  # several read blocks
    source = io.BytesIO(data)
    sink = FirstWriteProbe(source)

    write_predictions_csv(iris, source, sink, with_probabilities=False, chunk_rows=1_000)

    assert sink.read_at_first_write is not None
    assert sink.read_at_first_write < len(data) // 2


def test_memory_does_not_grow_with_the_file(iris: ServedModel) -> None:
    def peak_bytes(data: bytes) -> int:
        tracemalloc.start()
        try:
            write_predictions_csv(
                iris,
                io.BytesIO(data),
                FirstWriteProbe(io.BytesIO()),
                with_probabilities=False,
                chunk_rows=2_000,
            )
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = iris_bytes(60_000), iris_bytes(180_000)

    # Reading the whole file would make the peak grow with it, by about len(large) or more.
    assert peak_bytes(large) < peak_bytes(small) + len(large) // 4
