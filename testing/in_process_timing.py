"""The trained model's predict timed in this process, loaded as the server loads it."""

from __future__ import annotations

import functools
import importlib
import statistics
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.benchmark_workload import MODEL, TARGET, TEST_CSV

BATCH_ROWS = (1, 8, 64, 512)


@dataclass(frozen=True)
class InProcessRow:
    rows: int
    pipeline_us: float
    fast_us: float | None


@dataclass(frozen=True)
class InProcessResult:
    rows: list[InProcessRow]
    model_summary: str
    fast_note: str


def time_per_call(call: Callable[[], object], repeats: int, seconds_per_run: float = 0.2) -> float:
    """Seconds per call: the median of `repeats` timed runs, each of as many calls as fill
    about `seconds_per_run`."""
    timer = timeit.Timer(call)
    number, elapsed = timer.autorange()
    number = max(1, round(number * seconds_per_run / max(elapsed, 1e-9)))
    return statistics.median(timer.repeat(repeat=repeats, number=number)) / number


def iris_frame(rows: int) -> Any:
    """`rows` iris feature rows from ML/data/test.csv, cycled."""
    import numpy as np
    import pandas as pd

    features = pd.read_csv(TEST_CSV).drop(columns=[TARGET])
    return features.iloc[np.arange(rows) % len(features)].reset_index(drop=True)


def load_fast_pipeline(pipeline: Any) -> tuple[Any | None, str]:
    """CompiledPipeline compiled for `pipeline` when ML/forest_inference.py exists, and a note."""
    try:
        module = importlib.import_module("ML.forest_inference")
    except ModuleNotFoundError as exc:
        if exc.name != "ML.forest_inference":
            raise
        return None, "ML/forest_inference.py does not exist"
    # An optional column: a half-written module must not cost the whole run.
    try:
        fast = module.CompiledPipeline.compile(pipeline)
    except Exception as exc:
        return None, f"CompiledPipeline.compile failed ({type(exc).__name__}: {exc})"
    if fast is None:
        return None, "CompiledPipeline.compile returned None: this pipeline is not supported"
    return fast, "CompiledPipeline.predict(float64 matrix) from ML/forest_inference.py"


def measure_in_process(model_dir: Path, repeats: int) -> InProcessResult:
    """Time the trained model's predict in this process, loaded as the server loads it."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from ML.model_store import ModelStore
    from ML.secret_key import load_or_create_secret

    store = ModelStore(model_dir, load_or_create_secret(None, model_dir / "_state"))
    loaded = store.load_current(MODEL)
    pipeline = loaded.pipeline
    fast, fast_note = load_fast_pipeline(pipeline)
    measured = []
    # One thread, as the gunicorn config gives every worker.
    with threadpool_limits(limits=1):
        for rows in BATCH_ROWS:
            frame = iris_frame(rows)
            pipeline_s = time_per_call(functools.partial(pipeline.predict, frame), repeats)
            fast_s = None
            if fast is not None:
                matrix = frame[list(fast.feature_names)].to_numpy(dtype=np.float64)
                if not np.array_equal(fast.predict(matrix), pipeline.predict(frame)):
                    fast_note += f"; WARNING: its labels differ from the pipeline's at {rows} rows"
                fast_s = time_per_call(functools.partial(fast.predict, matrix), repeats)
            measured.append(
                InProcessRow(rows, pipeline_s * 1e6, None if fast_s is None else fast_s * 1e6)
            )
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    summary = f"`{MODEL}` version {loaded.version}: {type(estimator).__name__}" + (
        f" with {len(estimator.estimators_)} trees" if hasattr(estimator, "estimators_") else ""
    )
    return InProcessResult(measured, summary, fast_note)
