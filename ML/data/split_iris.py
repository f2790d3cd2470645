"""The iris sample: writes full.csv, and its stratified 70/30 split train.csv and test.csv."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

DATA_DIR = Path(__file__).resolve().parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
TEST_SIZE = 0.3
SEED = 42


def iris_frame() -> pd.DataFrame:
    """The 150 iris rows (bundled with scikit-learn, no download), species as names."""
    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=COLUMNS[:4])
    frame["species"] = [str(iris.target_names[code]) for code in iris.target]
    return frame


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split with a fixed seed; rows keep their original order."""
    train, test = train_test_split(
        frame, test_size=TEST_SIZE, random_state=SEED, stratify=frame["species"]
    )
    return train.sort_index(), test.sort_index()


def write_iris_csvs(data_dir: Path) -> list[Path]:
    """Write full.csv, train.csv and test.csv into `data_dir`; return their paths."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full = iris_frame()
    train, test = split(full)
    paths = []
    for name, frame in (("full.csv", full), ("train.csv", train), ("test.csv", test)):
        path = data_dir / name
        frame.to_csv(path, index=False, lineterminator="\n")
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    data_dir = Path(argv[1]) if len(argv) > 1 else DATA_DIR
    for path in write_iris_csvs(data_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
