"""Tests for rest_api/storage_setup.py and for workers that never create storage.

Under gunicorn the master creates the store, state folder and databases once
(create_storage); workers run with create_store=False, so one that starts while the store
folder is moved away boots, answers 503 and creates nothing until the folder is back.
"""

from __future__ import annotations

import stat
from pathlib import Path

from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from rest_api.passwords import new_hasher
from rest_api.storage_setup import create_storage
from rest_api.users import GENERATED_ADMIN_FILE, GENERATED_ADMIN_NAME, load_users
from testing.fastml_api import basic_auth
from testing.servers import ADMIN
from tests.iris import ROW, TrainedIris


def test_create_storage_makes_every_file_a_worker_opens(settings: Settings) -> None:
    create_storage(settings)

    state_dir = settings.resolved_state_dir
    assert (settings.model_dir / ".store").is_dir()
    for path in (settings.jobs_db_path, settings.login_failures_db_path, state_dir / "secret_key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(settings.uploads_dir.stat().st_mode) == 0o700


def test_a_worker_started_on_a_missing_store_creates_nothing_and_serves_once_it_is_back(
    settings: Settings, trained_iris: TrainedIris
) -> None:
    worker_settings = settings.model_copy(update={"create_store": False})
    model_dir = settings.model_dir
    with TestClient(create_app(worker_settings), headers=basic_auth(ADMIN)) as client:
        assert client.get("/health/ready").status_code == 503
        answer = client.post("/models/iris/predict", json={"rows": [ROW]})
        assert answer.status_code == 503, answer.text
        assert not model_dir.exists()

        trained_iris.copy_to(model_dir)  # the folder is moved back

        answer = client.post("/models/iris/predict", json={"rows": [ROW]})
        assert answer.status_code == 200, answer.text
        assert client.get("/health/ready").status_code == 200
        assert client.get("/jobs").status_code == 200


def test_a_worker_knows_the_generated_admin_its_master_read(tmp_path: Path) -> None:
    master_settings = Settings(model_dir=tmp_path / "models", log_path=tmp_path / "log")
    create_storage(master_settings)
    admin_file = master_settings.resolved_state_dir / GENERATED_ADMIN_FILE
    assert admin_file.is_file()
    moved = tmp_path / "moved"
    master_settings.model_dir.rename(moved)

    worker_settings = master_settings.model_copy(update={"create_store": False})
    users = load_users(worker_settings, new_hasher())

    assert list(users) == [GENERATED_ADMIN_NAME]
    assert not admin_file.exists()
