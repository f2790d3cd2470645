"""What recycling the training process costs, and what keeping it costs.

    PYTHONPATH=. python testing/pool_recycling_bench.py [--rows 400000] [--starts 5]

Measures (1) the time to start a fresh spawned process and import what a training job
imports (scikit-learn, pandas, ML.training), the price of a fresh process per job; and
(2) the resident memory of an idle pool process after one large training job, kept
(max_tasks_per_child=None) or recycled (max_tasks_per_child=1: its replacement's memory).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def import_training_libraries() -> int:
    import pandas  # noqa: F401
    import sklearn.ensemble  # noqa: F401

    import ML.datasets
    import ML.training  # noqa: F401

    return os.getpid()


def train_large(rows: int) -> int:
    import numpy as np
    import pandas as pd

    from ML.datasets import DatasetLimits, read_labelled_csv
    from ML.training import TrainingOptions, train_model

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 8)), columns=[f"x{i}" for i in range(8)])
    frame["label"] = rng.integers(0, 3, rows).astype(str)
    fd, path = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    frame.to_csv(path, index=False)
    try:
        dataset = read_labelled_csv(Path(path), "label", DatasetLimits(max_rows=rows + 1))
        options = TrainingOptions(estimator="random_forest", params={"n_estimators": 20})
        train_model(dataset, options)
    finally:
        os.unlink(path)
    return os.getpid()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def pool_pids(pool: ProcessPoolExecutor) -> list[int]:
    return list(pool._processes)


def idle_rss_after_large_job(rows: int, max_tasks_per_child: int | None) -> float:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        1, mp_context=context, max_tasks_per_child=max_tasks_per_child
    ) as pool:
        pool.submit(train_large, rows).result()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not pool_pids(pool):
            time.sleep(0.1)  # the replacement of a recycled process starts right after the job
        time.sleep(2)  # let it settle: idle, as it stays until the next job
        return sum(rss_mib(pid) for pid in pool_pids(pool))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    seconds = []
    for _ in range(args.starts):
        started = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            pool.submit(import_training_libraries).result()
        seconds.append(time.perf_counter() - started)
    print(
        f"fresh process + imports: median {statistics.median(seconds):.2f} s "
        f"(min {min(seconds):.2f}, max {max(seconds):.2f}, {args.starts} starts)"
    )
    for label, limit in (("kept", None), ("recycled", 1)):
        rss = idle_rss_after_large_job(args.rows, limit)
        print(f"idle pool process after a {args.rows}-row job, {label}: {rss:.0f} MiB RSS")


if __name__ == "__main__":
    main()
