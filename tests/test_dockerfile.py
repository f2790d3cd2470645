"""The Dockerfile is correct by construction: what it copies exists, what it runs is tested.

There is no Docker engine here; tests/system starts the server with the Dockerfile's own CMD.
"""

from __future__ import annotations

import json

from ML.config import PROJECT_DIR

DOCKERFILE = (PROJECT_DIR / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [
        line[len(name) + 1 :] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")
    ]


def test_every_copied_path_exists() -> None:
    for arguments in instructions("COPY"):
        *sources, _ = arguments.split()
        for source in sources:
            assert (PROJECT_DIR / source).exists(), source


def test_the_image_installs_the_pinned_requirements_and_runs_gunicorn() -> None:
    assert "pip install --no-cache-dir -r requirements.txt" in DOCKERFILE
    command = json.loads(instructions("CMD")[0])
    assert command == ["gunicorn", "-c", "gunicorn/gunicorn-config.py", "wsgi:app"]
    assert "FASTML_BIND=0.0.0.0:8000" in DOCKERFILE
    assert "USER fastml" in DOCKERFILE


def test_requirements_are_pinned() -> None:
    for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert "==" in line, line
