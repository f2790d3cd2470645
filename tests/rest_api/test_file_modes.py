"""State files are 0600 in 0700 folders whatever the umask and the user configuration."""

from __future__ import annotations

import asyncio
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import UploadFile
from fastapi.testclient import TestClient

from ML.config import Settings
from ML.jobs import JobStore
from rest_api.app import create_app
from rest_api.uploads import save_upload
from testing.fastml_api import basic_auth
from testing.servers import ADMIN


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def loose_modes(state_dir: Path) -> list[str]:
    """Every path under `state_dir` (itself included) looser than 0700 / 0600."""
    found = []
    for path in [state_dir, *state_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            found.append(f"{path.relative_to(state_dir)}: {mode:o}")
    return found


def use_every_state_file(settings: Settings) -> list[str]:
    """Start the app, log in, list jobs and save an upload; the names of the state files."""
    with TestClient(create_app(settings), headers=basic_auth(ADMIN)) as client:
        assert client.get("/jobs").status_code == 200
        upload = UploadFile(io.BytesIO(b"a,b\n1,2\n"), filename="t.csv")
        asyncio.run(save_upload(upload, settings.uploads_dir))
        return sorted(p.name for p in settings.resolved_state_dir.rglob("*"))


@pytest.mark.usefixtures("permissive_umask")
def test_state_files_are_private_with_service_pass_and_umask_0(settings: Settings) -> None:
    names = use_every_state_file(settings)

    for expected in ["jobs.sqlite3", "login_failures.sqlite3", "secret_key", "uploads"]:
        assert expected in names
    assert any(name.endswith(".csv") for name in names)
    assert any(name.endswith("-wal") for name in names)
    assert loose_modes(settings.resolved_state_dir) == []


def test_loose_state_from_an_older_version_is_tightened(settings: Settings) -> None:
    state_dir = settings.resolved_state_dir
    state_dir.mkdir(parents=True, mode=0o755)
    state_dir.chmod(0o755)
    JobStore(settings.jobs_db_path).list_recent(1)  # opened lazily: make the file
    (settings.uploads_dir).mkdir(mode=0o755)
    settings.uploads_dir.chmod(0o755)
    settings.jobs_db_path.chmod(0o644)

    use_every_state_file(settings)

    assert loose_modes(state_dir) == []
