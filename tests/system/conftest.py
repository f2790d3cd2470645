"""Real servers for system tests: gunicorn with Uvicorn workers on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.servers import Server, start_server, stop_server
from tests.iris import serving_iris


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A fresh server of this test's own: for tests that change models, users or the process."""
    running = start_server(tmp_path)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="session")
def iris_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per session serving iris version 1, for tests that only predict.

    A test may add other models to it but must not change, promote or delete iris, nor send
    wrong passwords for the admin (the login throttle would lock the others out).
    """
    yield from serving_iris(tmp_path_factory.mktemp("iris-server"))
