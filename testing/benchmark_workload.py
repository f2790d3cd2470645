"""What testing/benchmark.py measures: the model, the request, the concurrencies."""

from __future__ import annotations

import json
from typing import Any

from testing.servers import PROJECT_DIR

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
