"""Benchmark: a 1M-row CSV through `write_predictions_csv` and `read_labelled_csv`, in-process.

    python testing/csv_predictions_bench.py                    # this checkout
    python testing/csv_predictions_bench.py --tree /tmp/other  # another checkout's ML/

Prints one JSON line: wall and CPU seconds, and rows/s, of CSV prediction (iris random forest,
100 trees, the route's chunk size, output to /dev/null, one numeric thread) and of the training
read of the same file. Compare two checkouts by running them alternately (the machine's speed
drifts); CPU seconds vary less than wall seconds on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CHUNK_ROWS = 20_000  # the default of FASTML_CSV_CHUNK_ROWS


def write_iris_csv(path: Path, rows: int, *, quote_all: bool) -> None:
    """`rows` rows of ML/data/full.csv with noise on each measure (fixed seed), 29 bytes a row
    (39 with every cell quoted, which sends every record through the csv module)."""
    lines = (PROJECT_DIR / "ML" / "data" / "full.csv").read_text().splitlines()
    samples = [line.split(",") for line in lines[1:]]
    rng = random.Random(0)
    with path.open("w") as out:
        out.write(",".join([*FEATURES, "species"]) + "\n")
        for _ in range(rows):
            *measures, species = rng.choice(samples)
            noisy = [f"{float(value) + rng.uniform(-0.2, 0.2):.2f}" for value in measures]
            cells = [*noisy, species]
            out.write(",".join(f'"{cell}"' if quote_all else cell for cell in cells) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=PROJECT_DIR, help="checkout to import ML from")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quote-all", action="store_true", help="quote every cell of the file")
    parser.add_argument("--csv", type=Path, help="where the generated file is kept for reuse")
    args = parser.parse_args()
    name = f"fastml_iris_{args.rows}{'_quoted' if args.quote_all else ''}.csv"
    csv_path: Path = args.csv or Path(tempfile.gettempdir()) / name
    sys.path.insert(0, str(args.tree.resolve()))

    from threadpoolctl import threadpool_limits

    from ML.datasets import DatasetLimits, read_labelled_csv
    from ML.model_store import LoadedModel
    from ML.prediction import ServedModel, write_predictions_csv
    from ML.training import TrainingOptions, train_model

    threadpool_limits(1)  # as each server worker does
    if not csv_path.exists():
        write_iris_csv(csv_path, args.rows, quote_all=args.quote_all)
    iris = read_labelled_csv(PROJECT_DIR / "ML" / "data" / "train.csv", "species", DatasetLimits())
    trained = train_model(iris, TrainingOptions(params={"n_estimators": 100}))
    model = ServedModel(LoadedModel("iris", 1, trained.pipeline, trained.metadata))

    with csv_path.open("rb") as source, open(os.devnull, "wb") as sink:
        started, cpu_started = time.perf_counter(), time.process_time()
        rows = write_predictions_csv(
            model, source, sink, with_probabilities=False, chunk_rows=CHUNK_ROWS
        )
        predict_seconds = time.perf_counter() - started
        predict_cpu_seconds = time.process_time() - cpu_started
    started, cpu_started = time.perf_counter(), time.process_time()
    dataset = read_labelled_csv(csv_path, "species", DatasetLimits())
    read_seconds = time.perf_counter() - started
    read_cpu_seconds = time.process_time() - cpu_started
    assert len(dataset.target) == rows
    print(
        json.dumps(
            {
                "tree": str(args.tree),
                "file": csv_path.name,
                "rows": rows,
                "predict_csv_seconds": round(predict_seconds, 3),
                "predict_csv_cpu_seconds": round(predict_cpu_seconds, 3),
                "predict_csv_rows_per_s": round(rows / predict_seconds),
                "training_read_seconds": round(read_seconds, 3),
                "training_read_cpu_seconds": round(read_cpu_seconds, 3),
                "training_read_rows_per_s": round(rows / read_seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
