"""The iris sample shipped in ML/data, and a model folder where iris was trained once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ML.config import PROJECT_DIR
from testing.fastml_api import ApiClient, train
from testing.servers import Server, start_server, stop_server

IRIS_DIR = PROJECT_DIR / "ML" / "data"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@dataclass(frozen=True)
class TrainedIris:
    """A model folder (store, job records, secret) where iris version 1 was trained by the API."""

    model_dir: Path
    job: dict[str, Any]

    def copy_to(self, model_dir: Path) -> None:
        """A private copy: a test may add, promote or delete versions without touching others."""
        shutil.copytree(self.model_dir, model_dir)


def train_iris_forest(client: ApiClient) -> dict[str, Any]:
    """Iris version 1 as every iris fixture has it: a random forest of 20 trees, trained
    through the API; its finished job."""
    job = train(
        client,
        "iris",
        IRIS_DIR / "train.csv",
        estimator="random_forest",
        params='{"n_estimators": 20}',
    )
    assert job["status"] == "succeeded", job
    return job


def serving_iris(work_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """A server of `extra_env` serving iris version 1, trained through the API; for fixtures
    (`yield from serving_iris(...)`), stopped when the fixture ends."""
    running = start_server(work_dir, extra_env)
    try:
        with running.client() as client:
            job = train(client, "iris", IRIS_DIR / "train.csv")
        assert job["status"] == "succeeded", job
        yield running
    finally:
        stop_server(running)
