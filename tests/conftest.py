"""Fixtures shared by every test package: settings in tmp_path, users, the iris sample."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ML.config import PROJECT_DIR, Settings
from rest_api.passwords import hash_password

IRIS_DIR = PROJECT_DIR / "ML" / "data"
ADMIN = ("admin", "password")  # the fast-ml template's SERVICE_USER / SERVICE_PASS
TRAINER = ("tina", "trainer-secret-1")
PREDICTOR = ("pete", "predictor-secret-1")


def basic_auth(user: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


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


@pytest.fixture
def settings(tmp_path: Path, users_file: Path) -> Settings:
    return Settings(
        model_dir=tmp_path / "models",
        log_path=tmp_path / "ML_server.log",
        service_user=ADMIN[0],
        service_pass=ADMIN[1],
        users_file=users_file,
        model_poll_seconds=0.1,
        login_max_failures=3,
        login_window_seconds=30,
    )


@pytest.fixture(scope="session")
def iris_train_csv() -> Path:
    return IRIS_DIR / "train.csv"


@pytest.fixture(scope="session")
def iris_test_csv() -> Path:
    return IRIS_DIR / "test.csv"
