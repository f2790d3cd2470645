"""What testing/benchmark.py measures: the model, the request, the concurrencies."""

from __future__ import annotations

import json
from typing import Any

from testing.fastml_api import ApiError, LocalClient, train
from testing.servers import ADMIN, PROJECT_DIR

TRAIN_CSV = PROJECT_DIR / "ML" / "data" / "train.csv"
TEST_CSV = PROJECT_DIR / "ML" / "data" / "test.csv"
TARGET = "species"
MODEL = "iris"
ESTIMATOR = "random_forest"
ESTIMATOR_PARAMS: dict[str, Any] = {"n_estimators": 100}
PREDICT_ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
PREDICT_BODY = json.dumps({"rows": [PREDICT_ROW]}, separators=(",", ":"))
CONCURRENCIES = (1, 16, 64)
WARMUP_REQUESTS = 300
OWN_CLIENT_CONCURRENCY = 64
OWN_CLIENT_MAX_REQUESTS = 200_000


def train_workload_model(base_url: str) -> None:
    """Train MODEL as above on the server at `base_url`; ApiError unless the job succeeds."""
    client = LocalClient(base_url, ADMIN)
    job = train(
        client, MODEL, TRAIN_CSV, TARGET, estimator=ESTIMATOR, params=json.dumps(ESTIMATOR_PARAMS)
    )
    if job["status"] != "succeeded":
        raise ApiError(f"training job {job['id']} did not succeed: {job}")
