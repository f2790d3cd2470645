"""docker-compose.yml for real: Redis, two API replicas behind nginx, two Celery workers and
Flower, started with Debian's docker-compose (1.29) as the README shows.

No image registry answers here, so an override file (the only difference from a user's run)
swaps the images: the project image built by the `image` fixture for api, worker and flower,
and a Debian image with redis-server and nginx (scripts/docker-debian-image) for redis and
nginx, run with the same arguments. Ports are free ones on 127.0.0.1 (API_PORT and
FLOWER_PORT, which the compose file reads).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ML.config import PROJECT_DIR
from testing.fastml_api import FINISHED, submit_training, train, wait_for_job
from testing.servers import ADMIN, free_port
from tests.docker.conftest import docker, unavailable
from tests.iris import ROW

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]
SERVICES_IMAGE = "fastml-services:bookworm"
UP_SECONDS = 240
# Jobs may run 20 s here, so the job of a killed worker is delivered again after 80 s (the
# visibility timeout follows the time limit: ML/tasks.py), plus the broker's restore polling.
JOB_TIME_LIMIT_SECONDS = 20
REDELIVERY_DEADLINE_SECONDS = 300

OVERRIDE = """
services:
  api:
    image: {image}
  worker:
    image: {image}
    environment:
      FASTML_JOB_TIME_LIMIT_SECONDS: "{time_limit}"
  flower:
    image: {image}
  redis:
    image: {services}
    command: ["redis-server", "--appendonly", "yes", "--appendfsync", "everysec",
              "--dir", "/data", "--protected-mode", "no"]
  nginx:
    image: {services}
    command: ["nginx", "-g", "daemon off;"]
"""


@dataclass
class Stack:
    project: str
    files: list[str]
    env: dict[str, str]
    url: str
    flower_url: str

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "--project-name", self.project]
        for file in self.files:
            command += ["--file", file]
        answer = subprocess.run(
            [*command, *args],
            cwd=PROJECT_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if answer.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: {answer.stderr[-3000:]}")
        return answer

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "--quiet", service).stdout.split()

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40").stdout[-6000:]


@pytest.fixture(scope="module")
def services_image(docker_engine: None) -> str:
    """A Debian image with redis-server and nginx, made once and kept by its tag."""
    if docker("image", "inspect", SERVICES_IMAGE, check=False).returncode != 0:
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            unavailable(f"making {SERVICES_IMAGE} needs root and debootstrap")
        subprocess.run(
            ["bash", "scripts/docker-debian-image", SERVICES_IMAGE, "redis-server", "nginx-light"],
            cwd=PROJECT_DIR,
            check=True,
            capture_output=True,
            timeout=1200,
        )
    return SERVICES_IMAGE


@pytest.fixture
def stack(image: str, services_image: str, tmp_path: Path) -> Iterator[Stack]:
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed (apt-get install docker-compose)")
    override = tmp_path / "override.yml"
    override.write_text(
        OVERRIDE.format(image=image, services=services_image, time_limit=JOB_TIME_LIMIT_SECONDS)
    )
    port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        "FASTML_SECRET_KEY": uuid.uuid4().hex * 2,
        "SERVICE_USER": ADMIN[0],
        "SERVICE_PASS": ADMIN[1],
        "API_PORT": str(port),
        "FLOWER_PORT": str(flower_port),
    }
    running = Stack(
        f"fastmltest{uuid.uuid4().hex[:10]}",
        ["docker-compose.yml", str(override)],
        env,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{flower_port}",
    )
    try:
        running.compose("up", "--detach", "--scale", "api=2", "--scale", "worker=2", timeout=600)
        wait_until_ready(running)
        yield running
    finally:
        running.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")


def wait_until_ready(stack: Stack) -> None:
    deadline = time.monotonic() + UP_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.url}/health/ready", timeout=3).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"the stack was not ready through nginx:\n{stack.logs()}")


def test_the_stack_trains_through_nginx_and_survives_a_killed_worker(
    stack: Stack, iris_train_csv: Path
) -> None:
    with httpx.Client(base_url=stack.url, auth=ADMIN, timeout=30) as client:
        done = train(client, "iris", iris_train_csv)
        assert done["status"] == "succeeded", f"{done}\n{stack.logs()}"
        # Both replicas answer (nginx spreads fresh connections): the same version each time.
        for _ in range(6):
            with httpx.Client(base_url=stack.url, auth=ADMIN, timeout=30) as fresh:
                answer = fresh.post("/models/iris/predict", json={"rows": [ROW]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == 1

        # A job whose worker container is killed while it runs is delivered again.
        slow = submit_training(
            client, "iris", iris_train_csv, params=json.dumps({"n_estimators": 1500})
        ).json()
        victim = worker_running(stack, slow["id"], client)
        docker("kill", victim)
        done = wait_for_job(client, slow["id"], FINISHED, REDELIVERY_DEADLINE_SECONDS)
        assert done["status"] == "succeeded", f"{done}\n{stack.logs()}"
        assert done["result"]["version"] == 2
        versions = client.get("/models/iris").json()["versions"]
        assert [version["version"] for version in versions] == [1, 2]  # one version per job

    flower = httpx.get(stack.flower_url, timeout=10)
    assert flower.status_code == 401  # Flower is behind the same user and password
    assert httpx.get(stack.flower_url, auth=ADMIN, timeout=10).status_code == 200


def worker_running(stack: Stack, job_id: str, client: httpx.Client) -> str:
    """The worker container whose log shows it started `job_id` (once the job runs)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if client.get(f"/jobs/{job_id}").json()["status"] == "running":
            for container in stack.containers("worker"):
                if (
                    job_id
                    in docker("logs", container, check=False).stderr
                    + docker("logs", container, check=False).stdout
                ):
                    return container
        time.sleep(0.5)
    raise AssertionError(f"no worker container shows job {job_id} running:\n{stack.logs()}")
