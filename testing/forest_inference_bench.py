"""Benchmark: scikit-learn pipeline predict_proba against ML.forest_inference.CompiledPipeline.

    python testing/forest_inference_bench.py  # forests, HistGradientBoosting, GradientBoosting
    python testing/forest_inference_bench.py --models iris-gb synthetic-gb

Times are the median of --repeat runs (timeit), per call, on a prebuilt DataFrame (sklearn)
or float64 matrix (CompiledPipeline); every result is checked equal to sklearn's first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

if __package__ in (None, ""):
    # Run as `python testing/forest_inference_bench.py`: make the project root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ML.boosting_inference import CompiledGradientBoosting, CompiledHistGradientBoosting
from ML.forest_inference import CompiledForest, CompiledPipeline
from testing.in_process_timing import time_per_call

BATCH_SIZES = (1, 8, 45, 64, 512, 4096)
IRIS_CSV = Path(__file__).resolve().parent.parent / "ML" / "data" / "train.csv"
TARGET_SECONDS_PER_RUN = 0.02  # each timed run repeats the call for about this long


def iris_with(model: Any) -> tuple[Pipeline, pd.DataFrame]:
    frame = pd.read_csv(IRIS_CSV)
    features = frame.drop(columns="species")
    return _fit(features, frame["species"], model), features


def synthetic_with(model: Any) -> tuple[Pipeline, pd.DataFrame]:
    values, labels = make_classification(
        n_samples=5000, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    features = pd.DataFrame(values, columns=[f"x{i}" for i in range(values.shape[1])])
    return _fit(features, labels, model), features


MODELS: dict[str, Callable[[], tuple[Pipeline, pd.DataFrame]]] = {
    "iris": partial(iris_with, None),
    "synthetic": partial(synthetic_with, None),
    "iris-hgb": partial(iris_with, HistGradientBoostingClassifier(random_state=42)),
    "iris-gb": partial(iris_with, GradientBoostingClassifier(random_state=42)),
    "synthetic-gb": partial(synthetic_with, GradientBoostingClassifier(random_state=42)),
}


def _fit(features: pd.DataFrame, labels: Any, model: Any = None) -> Pipeline:
    """The pipeline ML/training.py builds for numeric columns (the default random forest)."""
    preprocess = ColumnTransformer(
        [("numeric", Pipeline([("impute", SimpleImputer(strategy="median"))]), list(features))],
        remainder="drop",
    )
    if model is None:
        model = RandomForestClassifier(n_estimators=100, random_state=42, n_jobs=1)
    return Pipeline([("preprocess", preprocess), ("classifier", model)]).fit(features, labels)


def sample(features: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    picked = np.random.default_rng(seed).integers(0, len(features), rows)
    return features.iloc[picked].reset_index(drop=True)


def compare(name: str, repeat: int) -> None:
    pipeline, features = MODELS[name]()
    fast = CompiledPipeline.compile(pipeline)
    if fast is None:
        raise SystemExit(f"CompiledPipeline.compile refused the {name} pipeline")
    model = fast.model
    assert isinstance(
        model, CompiledForest | CompiledGradientBoosting | CompiledHistGradientBoosting
    )
    width = len(fast.feature_names)
    print(f"\n{name}: {model.n_trees} trees, depth {model.depth}, {width} features")
    print(f"{'rows':>6} {'sklearn ms':>11} {'fast ms':>9} {'speed-up':>9}")
    for rows in BATCH_SIZES:
        frame = sample(features, rows, seed=rows)
        matrix = frame[fast.feature_names].to_numpy(np.float64)
        if not np.array_equal(fast.predict_proba(matrix), pipeline.predict_proba(frame)):
            raise SystemExit(f"{name}: CompiledPipeline differs from sklearn on {rows} rows")
        slow = time_per_call(partial(pipeline.predict_proba, frame), repeat, TARGET_SECONDS_PER_RUN)
        quick = time_per_call(partial(fast.predict_proba, matrix), repeat, TARGET_SECONDS_PER_RUN)
        print(f"{rows:>6} {slow * 1e3:>11.3f} {quick * 1e3:>9.3f} {slow / quick:>8.1f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per figure")
    args = parser.parse_args(argv)
    # One thread, as the gunicorn config gives every worker (HistGradientBoosting uses OpenMP).
    with threadpool_limits(limits=1):
        for name in args.models:
            compare(name, args.repeat)


if __name__ == "__main__":
    main()
