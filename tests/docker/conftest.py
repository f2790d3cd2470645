"""A real Docker engine and the project image, built offline as the README shows.

The engine is the one running, else a `dockerd` these tests start (as root) and stop. The
image is built by scripts/docker-build-offline from the Dockerfile users build, on a Debian
base image made once with debootstrap and kept by its tag. Without an engine the tests skip
and say why; with FASTML_REQUIRE_DOCKER=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from ML.config import PROJECT_DIR

BASE_IMAGE = "fastml-base:bookworm"
MODELS_PATH = "/app/ML/saved_models"  # the image's VOLUME
ENGINE_START_SECONDS = 90
BUILD_SECONDS = 1500  # a cold build: debootstrap, the wheel downloads and the image
READY_SECONDS = 120
BUILD_STAGE_FILTER = ("--filter", "dangling=true", "--filter", "label=org.fastml.stage=build")


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    answer = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and answer.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {answer.stderr}")
    return answer


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("FASTML_REQUIRE_DOCKER") == "1":
        pytest.fail(f"FASTML_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


def engine_answers() -> bool:
    try:
        return docker("info", timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_engine(log_path: Path) -> subprocess.Popen[bytes]:
    """Start dockerd and wait until it answers; skip (or fail) with its log if it cannot."""
    if shutil.which("dockerd") is None:
        unavailable(
            "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        unavailable("no Docker engine answers and starting dockerd needs root")
    with log_path.open("wb") as log:
        engine = subprocess.Popen(
            ["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + ENGINE_START_SECONDS
    for _ in range(200):
        if engine.poll() is not None or time.monotonic() > deadline:
            break
        if engine_answers():
            return engine
        time.sleep(0.5)
    stop_engine(engine)
    tail = log_path.read_text(errors="replace")[-2000:]
    unavailable(f"dockerd could not start here (log {log_path}):\n{tail}")


def stop_engine(engine: subprocess.Popen[bytes]) -> None:
    if engine.poll() is None:
        engine.terminate()  # dockerd stops its containers and its own containerd
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait(timeout=10)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if shutil.which("docker") is None:
        unavailable("the docker command is not installed (apt-get install docker.io)")
    if engine_answers():
        yield
        return
    engine = start_engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    try:
        yield
    finally:
        stop_engine(engine)


@pytest.fixture(scope="session")
def image(docker_engine: None) -> Iterator[str]:
    """The project image, built offline; removed afterwards with its build stage."""
    has_base = docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0
    if not has_base and (os.geteuid() != 0 or shutil.which("debootstrap") is None):
        unavailable(f"making the base image {BASE_IMAGE} needs root and debootstrap")
    tag = f"fastml-test:{uuid.uuid4().hex[:12]}"
    stages_before = set(docker("images", "--quiet", *BUILD_STAGE_FILTER).stdout.split())
    env = {**os.environ, "PYTHON": sys.executable, "FASTML_BASE_IMAGE": BASE_IMAGE}
    build = subprocess.run(
        ["bash", "scripts/docker-build-offline", tag],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
        check=False,
    )
    new_stages = set(docker("images", "--quiet", *BUILD_STAGE_FILTER).stdout.split())
    new_stages -= stages_before
    try:
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        yield tag
    finally:
        docker("rmi", "--force", tag, *new_stages, check=False)


@dataclass
class Container:
    name: str
    volume: str

    @property
    def url(self) -> str:
        """The port docker published on 127.0.0.1 (it may change when the container restarts)."""
        address = docker("port", self.name, "8000/tcp").stdout.split()[0]
        return f"http://{address}"

    def logs(self) -> str:
        answer = docker("logs", "--tail", "60", self.name, check=False)
        return answer.stdout + answer.stderr

    def wait_ready(self) -> float:
        """Seconds until /health/ready answered 200 through the published port."""
        start = time.monotonic()
        state = "unknown"
        for _ in range(2000):
            if time.monotonic() - start > READY_SECONDS:
                break
            state = docker("inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()
            if state == "running":
                try:
                    if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                        return time.monotonic() - start
                except httpx.TransportError:
                    pass
            elif state != "created":
                break
            time.sleep(0.2)
        raise AssertionError(f"container {self.name} not ready ({state}):\n{self.logs()}")

    def exec(self, *command: str) -> str:
        return docker("exec", self.name, *command).stdout

    def health(self) -> str:
        return docker("inspect", "--format", "{{.State.Health.Status}}", self.name).stdout.strip()


RunContainer = Callable[..., Container]


@pytest.fixture
def run_container(image: str) -> Iterator[RunContainer]:
    """`docker run` the image on 127.0.0.1 with a named volume; all removed afterwards."""
    names: list[str] = []
    volume = f"fastml-test-{uuid.uuid4().hex[:12]}"

    def run(*options: str) -> Container:
        name = f"fastml-test-{uuid.uuid4().hex[:12]}"
        names.append(name)
        docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::8000",
               "--volume", f"{volume}:{MODELS_PATH}", *options, image)  # fmt: skip
        container = Container(name, volume)
        container.wait_ready()
        return container

    try:
        yield run
    finally:
        for name in names:
            docker("rm", "--force", "--volumes", name, check=False)
        docker("volume", "rm", "--force", volume, check=False)
