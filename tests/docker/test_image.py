"""The image in a real Docker engine: the README's tour, a volume that keeps the models, a
non-root server and a healthcheck that turns healthy. Only through ports on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from testing.fastml_api import train
from testing.servers import ADMIN
from tests.docker.conftest import Container, RunContainer, docker
from tests.iris import ROW

# The first test pays for building the image (and, on a new machine, the base image).
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]
HEALTHY_SECONDS = 120
# The README: with no user configured, the first start writes the admin's password here.
CREDENTIALS = "ML/saved_models/_state/admin_credentials.txt"


def generated_admin(container: Container) -> tuple[str, str]:
    name, _, password = container.exec("cat", CREDENTIALS).strip().partition(":")
    return name, password


def predict(container: Container, auth: tuple[str, str]) -> httpx.Response:
    with httpx.Client(base_url=container.url, auth=auth, timeout=30) as client:
        return client.post("/models/iris/predict", json={"rows": [ROW]})


def test_readme_tour_and_the_model_outlives_the_container(
    run_container: RunContainer, iris_train_csv: Path
) -> None:
    container = run_container()
    auth = generated_admin(container)
    with httpx.Client(base_url=container.url, auth=auth, timeout=30) as client:
        job = train(client, "iris", iris_train_csv, estimator="random_forest")
        assert job["status"] == "succeeded", job
    answer = predict(container, auth)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"model": "iris", "version": 1, "predictions": ["setosa"]}

    # The same container restarted, then a new container on the same volume: the model,
    # its secret key and the generated admin are all on the volume.
    docker("restart", "--time", "30", container.name, timeout=90)
    container.wait_ready()
    assert predict(container, auth).json()["predictions"] == ["setosa"]

    docker("rm", "--force", container.name)
    successor = run_container()
    assert generated_admin(successor) == auth
    answer = predict(successor, auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 1


def test_runs_as_non_root_and_turns_healthy(run_container: RunContainer) -> None:
    container = run_container(
        "--env", f"SERVICE_USER={ADMIN[0]}", "--env", f"SERVICE_PASS={ADMIN[1]}"
    )
    # gunicorn is the container's process 1 (exec-form CMD): its real and effective uid.
    uids = next(
        line.split()[1:3]
        for line in container.exec("cat", "/proc/1/status").splitlines()
        if line.startswith("Uid:")
    )
    assert uids == ["10001", "10001"]
    assert container.exec("id", "-un").strip() == "fastml"
    with httpx.Client(base_url=container.url, auth=ADMIN, timeout=30) as client:
        assert client.get("/models").status_code == 200

    deadline = time.monotonic() + HEALTHY_SECONDS
    for _ in range(600):
        status = container.health()
        if status == "healthy" or time.monotonic() > deadline:
            break
        assert status == "starting", container.logs()
        time.sleep(1)
    assert status == "healthy", container.logs()
