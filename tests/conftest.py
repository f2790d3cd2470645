"""Fixtures shared by every test package: settings in tmp_path, users, the iris sample.

Constants and helpers live in normal modules (tests/users.py, tests/iris.py,
testing/servers.py, testing/fastml_api.py); this file only holds fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from rest_api.app import create_app
from rest_api.passwords import hash_password
from testing.fastml_api import basic_auth
from testing.servers import ADMIN
from tests.iris import IRIS_DIR, TrainedIris, train_iris_forest
from tests.redis_fixture import (
    RedisServer,
    delete_prefixed,
    running_redis,
    shared_redis_url,
    unique_prefix,
)
from tests.users import PREDICTOR, TRAINER


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A users file with a trainer and a predictor (argon2id), hashed once per session."""
    path = tmp_path_factory.mktemp("users") / "users.txt"
    path.write_text(
        f"# test users\n"
        f"{TRAINER[0]}:trainer:{hash_password(TRAINER[1])}\n"
        f"{PREDICTOR[0]}:predictor:{hash_password(PREDICTOR[1])}\n"
    )
    return path


def make_settings(work_dir: Path, users_file: Path) -> Settings:
    return Settings(
        model_dir=work_dir / "models",
        log_path=work_dir / "ML_server.log",
        service_user=ADMIN[0],
        service_pass=ADMIN[1],
        users_file=users_file,
        model_poll_seconds=0.1,
        login_max_failures=3,
        login_window_seconds=30,
    )


@pytest.fixture
def settings(tmp_path: Path, users_file: Path) -> Settings:
    return make_settings(tmp_path, users_file)


@pytest.fixture(scope="session")
def iris_train_csv() -> Path:
    return IRIS_DIR / "train.csv"


@pytest.fixture(scope="session")
def iris_test_csv() -> Path:
    return IRIS_DIR / "test.csv"


@pytest.fixture(scope="session")
def trained_iris(tmp_path_factory: pytest.TempPathFactory, users_file: Path) -> TrainedIris:
    """Iris trained once per session (random forest, 20 trees) through a real app's job runner."""
    settings = make_settings(tmp_path_factory.mktemp("trained-iris"), users_file)
    with TestClient(create_app(settings), headers=basic_auth(ADMIN)) as client:
        job = train_iris_forest(client)
    return TrainedIris(settings.model_dir, job)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis the whole session may write to, under each test's own `redis_prefix`."""
    yield from shared_redis_url(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards, no others."""
    prefix = unique_prefix()
    try:
        yield prefix
    finally:
        delete_prefixed(redis_url, prefix)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, append-only, that the test may stop and restart."""
    with running_redis(tmp_path / "redis", append_only=True) as server:
        yield server
