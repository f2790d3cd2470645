"""What the Dockerfile promises, checked without an engine (tests/docker builds and runs it).

tests/system starts the server outside containers with the Dockerfile's own CMD, so that
line must stay one exec-form JSON array that also works from a checkout.
"""

from __future__ import annotations

import json

from ML.config import PROJECT_DIR

DOCKERFILE = (PROJECT_DIR / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [
        line[len(name) + 1 :] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")
    ]


def final_stage() -> str:
    return DOCKERFILE.rsplit("\nFROM ", 1)[1]


def test_every_copied_path_exists() -> None:
    for arguments in instructions("COPY"):
        if arguments.startswith("--from=") or "${" in arguments:
            continue  # from the build stage, or the optional wheelhouse
        *sources, _ = arguments.split()
        for source in sources:
            assert (PROJECT_DIR / source).exists(), source


def test_the_default_base_is_python_slim_and_only_base_and_wheelhouse_are_arguments() -> None:
    assert instructions("ARG") == ["BASE_IMAGE=python:3.11-slim", 'WHEELHOUSE=""']
    assert instructions("FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]


def test_the_final_stage_runs_gunicorn_as_a_user_with_a_volume_and_a_healthcheck() -> None:
    command = json.loads(instructions("CMD")[-1])
    assert command == ["gunicorn", "-c", "gunicorn/gunicorn-config.py", "wsgi:app"]
    stage = final_stage()
    assert "FASTML_BIND=0.0.0.0:8000" in stage
    assert "\nUSER fastml\n" in stage
    assert 'VOLUME ["/app/ML/saved_models"]' in stage
    assert "/health/ready" in stage.split("\nHEALTHCHECK ", 1)[1]
    # Nothing but the venv comes from the build stage: no pip cache, wheels or compiler.
    assert [line for line in instructions("COPY") if "--from" in line] == [
        "--from=build /opt/venv /opt/venv"
    ]


def test_the_build_context_holds_no_tests_venv_or_saved_models() -> None:
    ignored = [
        line
        for line in (PROJECT_DIR / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignored[0] == "*"  # an allow-list: whatever is not named below stays out
    allowed = {line[1:] for line in ignored if line.startswith("!")}
    assert allowed == {
        "requirements.txt", "wsgi.py", "ML", "rest_api", "gunicorn", "testing", ".wheelhouse"
    }  # fmt: skip
    assert "ML/saved_models" in ignored


def test_requirements_are_pinned() -> None:
    for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert "==" in line, line
