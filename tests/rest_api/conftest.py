"""An app with its lifespan running, the session's iris model in its own model folder, and
the two job modes (embedded default, Celery) a module may run its tests in."""

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
from tests.conftest import make_settings
from tests.iris import TrainedIris, train_iris_forest
from tests.rest_api.celery_stack import CeleryStack, running_celery_stack


@pytest.fixture
def client(settings: Settings, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    # On the embedded default a test that asks for iris_model finds it in the store at
    # start-up, as after a restart; the copy is made before the app opens its store and job
    # database. The Celery mode keeps job records in Redis, so iris_model trains it there.
    if "iris_model" in request.fixturenames and not settings.is_distributed:
        trained_iris: TrainedIris = request.getfixturevalue("trained_iris")
        trained_iris.copy_to(settings.model_dir)
    with TestClient(create_app(settings), headers=basic_auth(ADMIN)) as test_client:
        yield test_client


@pytest.fixture
def iris_model(client: TestClient, settings: Settings, trained_iris: TrainedIris) -> dict[str, Any]:
    """Iris version 1 (random forest, 20 trees), current, in this test's own model folder,
    its training job among the job records; the job."""
    if settings.is_distributed:
        return train_iris_forest(client)
    return trained_iris.job


@pytest.fixture(scope="module", params=["embedded", "celery"])
def job_mode(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryStack | None]:
    """None for the embedded default, else this module's Celery stack: a private
    redis-server and a real `celery --app ML.tasks worker`, started once per module."""
    if request.param == "embedded":
        yield None
        return
    with running_celery_stack(tmp_path_factory.mktemp("celery")) as stack:
        yield stack


@pytest.fixture
def any_mode_settings(job_mode: CeleryStack | None, tmp_path: Path, users_file: Path) -> Settings:
    """Settings of the embedded default, then of the Celery mode (the module's worker, wiped
    clean for this test). A test module runs in both modes by overriding `settings` with
    this fixture; README's section on tests says which modules do."""
    if job_mode is None:
        return make_settings(tmp_path, users_file)
    settings = job_mode.settings(users_file)
    job_mode.reset(settings)
    return settings
