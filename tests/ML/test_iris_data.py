"""Tests for the iris sample in ML/data and the script that writes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ML.config import PROJECT_DIR
from ML.data import split_iris

DATA_DIR = PROJECT_DIR / "ML" / "data"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
SPECIES = {"setosa", "versicolor", "virginica"}


@pytest.mark.parametrize("name", ["full.csv", "train.csv", "test.csv"])
def test_committed_files_are_what_the_script_writes(name: str, tmp_path: Path) -> None:
    split_iris.write_iris_csvs(tmp_path)

    assert (DATA_DIR / name).read_bytes() == (tmp_path / name).read_bytes()


def test_columns_and_sizes() -> None:
    full, train, test = (
        pd.read_csv(DATA_DIR / name) for name in ("full.csv", "train.csv", "test.csv")
    )

    for frame in (full, train, test):
        assert list(frame.columns) == COLUMNS
        assert set(frame["species"]) == SPECIES
    assert (len(full), len(train), len(test)) == (150, 105, 45)


def test_split_is_stratified_and_partitions_the_full_set() -> None:
    full, train, test = (
        pd.read_csv(DATA_DIR / name) for name in ("full.csv", "train.csv", "test.csv")
    )

    assert train["species"].value_counts().to_dict() == dict.fromkeys(SPECIES, 35)
    assert test["species"].value_counts().to_dict() == dict.fromkeys(SPECIES, 15)
    joined = pd.concat([train, test]).sort_values(COLUMNS).reset_index(drop=True)
    pd.testing.assert_frame_equal(joined, full.sort_values(COLUMNS).reset_index(drop=True))


def test_script_runs_from_the_command_line(tmp_path: Path) -> None:
    script = DATA_DIR / "split_iris.py"

    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["full.csv", "test.csv", "train.csv"]
    assert (tmp_path / "train.csv").read_bytes() == (DATA_DIR / "train.csv").read_bytes()
