"""Fixtures for the ML tests: tiny CSVs written to tmp_path, and the datasets read from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ML.datasets import Dataset, DatasetLimits, read_labelled_csv
from tests.ML.samples import WriteCsv, mixed_rows


@pytest.fixture
def write_csv(tmp_path: Path) -> WriteCsv:
    """write_csv(content, name="data.csv") -> Path; str content is encoded as UTF-8."""

    def write(content: str | bytes, name: str = "data.csv") -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return write


@pytest.fixture
def limits() -> DatasetLimits:
    return DatasetLimits()


@pytest.fixture
def mixed_csv(write_csv: WriteCsv) -> Path:
    """48 rows: size (numeric), color (categorical), flag (True/False), label (yes/no)."""
    return write_csv("\n".join(["size,color,flag,label", *mixed_rows(48)]) + "\n", "mixed.csv")


@pytest.fixture
def mixed_dataset(mixed_csv: Path, limits: DatasetLimits) -> Dataset:
    return read_labelled_csv(mixed_csv, "label", limits)


@pytest.fixture
def int_labels_csv(write_csv: WriteCsv) -> Path:
    """45 rows, two numeric features, integer labels 0, 1, 2 (15 of each)."""
    lines = ["a,b,label"]
    for index in range(45):
        label = index % 3
        lines.append(f"{label * 3 + (index % 5) * 0.3:.2f},{(index * 7) % 10},{label}")
    return write_csv("\n".join(lines) + "\n", "ints.csv")


@pytest.fixture
def int_labels_dataset(int_labels_csv: Path, limits: DatasetLimits) -> Dataset:
    return read_labelled_csv(int_labels_csv, "label", limits)


@pytest.fixture(scope="module")
def iris(iris_train_csv: Path) -> Dataset:
    return read_labelled_csv(iris_train_csv, "species", DatasetLimits())
