"""An app with its lifespan running, and the session's iris model in its own model folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from testing.fastml_api import basic_auth
from testing.servers import ADMIN
from tests.celery_workers import running_worker
from tests.conftest import make_settings
from tests.iris import TrainedIris
from tests.redis_fixture import running_redis


@pytest.fixture
def client(settings: Settings, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    # A test that asks for iris_model finds it in the store at start-up, as after a restart;
    # the copy is made before the app opens its store and job database.
    if "iris_model" in request.fixturenames:
        trained_iris: TrainedIris = request.getfixturevalue("trained_iris")
        trained_iris.copy_to(settings.model_dir)
    with TestClient(create_app(settings), headers=basic_auth(ADMIN)) as test_client:
        yield test_client


@pytest.fixture
def iris_model(client: TestClient, trained_iris: TrainedIris) -> dict[str, Any]:
    """Iris version 1 (random forest, 20 trees), current, in this test's own model folder."""
    return trained_iris.job


@pytest.fixture(params=["embedded", "celery"])
def any_mode_settings(
    request: pytest.FixtureRequest, tmp_path: Path, users_file: Path
) -> Iterator[Settings]:
    """Settings of the embedded default, then of the Celery mode: a private redis-server and
    a real `celery --app ML.tasks worker` on the test's model folder. A test module runs in
    both modes by overriding `settings` with this fixture."""
    settings = make_settings(tmp_path, users_file)
    if request.param == "embedded":
        yield settings
        return
    with running_redis(tmp_path / "redis") as redis:
        settings = settings.model_copy(update={"broker_url": redis.url})
        with running_worker(tmp_path, redis.url):
            yield settings
