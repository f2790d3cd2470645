"""A full disk: clear 507s naming the folder, nothing partial left, predictions never stop.

Each test mounts a 4 MB tmpfs (as root; skipped with the reason otherwise) under the
server's folders on a real gunicorn, fills it, and unmounts it after.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from testing.fastml_api import submit_training, wait_for_job
from testing.servers import Server, start_server, stop_server
from tests.system.fault_tools import TRAIN_CSV, train_and_wait
from tests.system.test_crash_recovery import slow_training_csv
from tests.tmpfs import fill_disk, small_tmpfs

pytestmark = pytest.mark.system
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def big_csv(path: Path, megabytes: int) -> Path:
    rng = np.random.default_rng(0)
    rows = megabytes * 1024 * 1024 // 40
    frame = pd.DataFrame(rng.normal(size=(rows, 2)), columns=["a", "b"])
    frame["label"] = rng.integers(0, 2, rows).astype(str)
    frame.to_csv(path, index=False)
    return path


def predicts(server: Server) -> None:
    with server.client() as client:
        answer = client.post("/models/iris/predict", json={"rows": [ROW]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == ["setosa"]


def test_an_upload_that_fills_the_disk_answers_507_and_leaves_nothing(tmp_path: Path) -> None:
    upload = big_csv(tmp_path / "big.csv", megabytes=6)
    with small_tmpfs(tmp_path / "disk") as disk:
        uploads_dir = disk / "models" / "_state" / "uploads"
        server = start_server(tmp_path, {"FASTML_MODEL_DIR": str(disk / "models")})
        try:
            with server.client() as client:
                assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 1

                answer = submit_training(client, "iris", upload, "label")

                assert answer.status_code == 507, answer.text
                message = answer.json()["error"]["message"]
                assert "disk is full" in message and str(uploads_dir) in message
                assert list(uploads_dir.iterdir()) == []
                assert client.get("/jobs").status_code == 200
                assert httpx.get(f"{server.url}/health/ready").json()["status"] == "ready"
                assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 2
            predicts(server)
        finally:
            stop_server(server)


def test_a_server_starts_on_a_full_disk_serves_predictions_and_says_why_it_cannot_train(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        env = {"FASTML_MODEL_DIR": str(disk / "models")}
        server = start_server(tmp_path, env)
        try:
            with server.client() as client:
                assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 1
        finally:
            stop_server(server)
        fill_disk(disk)

        server = start_server(tmp_path, env)
        try:
            predicts(server)
            ready = httpx.get(f"{server.url}/health/ready").json()
            assert ready["status"] == "degraded"
            assert "no space left" in ready["checks"]["model_store"]
            with server.client() as client:
                answer = submit_training(client, "iris", TRAIN_CSV, "species")
                assert answer.status_code == 507, answer.text
                assert "disk is full" in answer.json()["error"]["message"]
                listed = client.get("/jobs")
                assert listed.status_code in (200, 507), listed.text
        finally:
            stop_server(server)


def test_startup_removes_uploads_that_no_job_owns(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    stop_server(server)
    uploads_dir = tmp_path / "models" / "_state" / "uploads"
    stray = uploads_dir / "left-by-a-crash.csv"
    stray.write_text("a,b\n1,2\n")
    an_hour_ago = time.time() - 3600
    os.utime(stray, (an_hour_ago, an_hour_ago))

    server = start_server(tmp_path)
    try:
        assert not stray.exists()
    finally:
        stop_server(server)


def test_a_full_model_store_fails_the_job_saying_so(tmp_path: Path) -> None:
    csv_path = slow_training_csv(tmp_path / "forest.csv")
    with small_tmpfs(tmp_path / "disk") as disk:
        model_dir = disk / "models"
        env = {"FASTML_MODEL_DIR": str(model_dir), "FASTML_STATE_DIR": str(tmp_path / "state")}
        server = start_server(tmp_path, env)
        try:
            with server.client() as client:
                assert train_and_wait(client, "iris", TRAIN_CSV, "species") == 1
                filler = fill_disk(disk, leave_bytes=256 * 1024)

                answer = submit_training(
                    client, "iris", csv_path, "label", params='{"n_estimators": 20}'
                )
                assert answer.status_code == 202, answer.text
                job = wait_for_job(client, answer.json()["id"], frozenset({"failed", "succeeded"}))

                assert job["status"] == "failed", job
                assert job["error"].startswith(f"no space left in the model store at {model_dir}")
                model = client.get("/models/iris").json()
                assert [v["version"] for v in model["versions"]] == [1]
                assert model["current_version"] == 1
                filler.unlink()
                assert train_and_wait(client, "iris", TRAIN_CSV, "species") > 1
            predicts(server)
        finally:
            stop_server(server)
