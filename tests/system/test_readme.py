"""The README's quick start and five-minute tour, run as written against a real server.

Substituted, and nothing else: the quick start's install step (`python3 -m venv .venv &&
.venv/bin/pip install -r requirements.txt && `) is this test's own environment, linked in
as `.venv`; the server listens on a free port (FASTML_BIND) and the tour's
`127.0.0.1:8000` becomes that address. The tour reads the generated admin password the way
the README says. Everything runs in a copy of the project, so no model, log or password of
the checkout is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ML.config import PROJECT_DIR
from testing.servers import free_port, is_ready

pytestmark = pytest.mark.system
README = PROJECT_DIR / "README.md"
QUICK_START_INSTALL = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && "
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
READY_DEADLINE_SECONDS = 60
TOUR_TIMEOUT_SECONDS = 240
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*_cache", "ML_server.log*", "saved_models"
)


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def quick_start_block(markdown: str) -> str:
    # The first one: "Running the server" further down shows background variants too.
    return next(block for block in bash_blocks(markdown) if "gunicorn/start-server.sh" in block)


def tour_block(markdown: str) -> str:
    section = markdown.split("\n## A five-minute tour\n", 1)[1].split("\n## ", 1)[0]
    (block,) = bash_blocks(section)
    return block


def test_the_readme_blocks_are_found() -> None:
    markdown = README.read_text()
    assert QUICK_START_INSTALL in quick_start_block(markdown)
    assert DOCUMENTED_ADDRESS in tour_block(markdown)


def copy_project(copy: Path) -> Path:
    """The project copied to `copy`, without models, logs or caches, with this venv."""
    shutil.copytree(PROJECT_DIR, copy, ignore=NOT_COPIED)
    (copy / ".venv").symlink_to(Path(sys.prefix))  # the install step, already done
    return copy


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "fastml")


def clean_environment(address: str) -> dict[str, str]:
    """A newcomer's shell: no fastml settings or users of ours, just the port."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("FASTML_") and name not in ("SERVICE_USER", "SERVICE_PASS")
    }
    env["FASTML_BIND"] = address
    return env


@pytest.fixture
def quick_start_server(project_copy: Path) -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    command = quick_start_block(README.read_text()).replace(QUICK_START_INSTALL, "")
    output_path = project_copy.parent / "server.out"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=project_copy,
            env=clean_environment(address),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_ready(f"http://{address}", process, output_path)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], output_path: Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    for _ in range(1000):
        if process.poll() is not None:
            raise AssertionError(f"the quick start exited: {output_path.read_text()}")
        if is_ready(url):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    raise AssertionError(f"the quick start's server is not ready: {output_path.read_text()}")


@pytest.mark.timeout(360)  # three jobs, each in a freshly spawned process
def test_quick_start_and_tour_work_as_written(project_copy: Path, quick_start_server: str) -> None:
    check_tour_output(run_tour(project_copy, quick_start_server))


def run_tour(project_copy: Path, address: str) -> str:
    """The README's tour as written, against `address`; its output (fails if the tour does)."""
    tour = tour_block(README.read_text()).replace(DOCUMENTED_ADDRESS, address)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour],
        cwd=project_copy,
        env=clean_environment(address),
        capture_output=True,
        text=True,
        timeout=TOUR_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert done.stderr == ""
    return done.stdout


def check_tour_output(output: str) -> None:
    """The answers the README shows are the answers the server gave."""
    assert '"error":{' not in output, output
    # Two training jobs and a batch-prediction job, each waited for and shown finished.
    assert output.count('"status":"succeeded"') == 3, output
    assert '"rows_done":45' in output
    # The answers the README shows are the answers the server gives.
    assert '{"model":"iris","version":1,"predictions":["setosa"]}' in output
    # The CSV answer, then the same from the batch-prediction job's result.
    assert output.count("sepal_length,sepal_width,petal_length,petal_width,species,prediction") == 2
    assert '"test_rows":45' in output  # evaluate, on test.csv's 45 rows
    assert '"current_version":2' in output  # the second version became current,
    rolled_back = output.splitlines()[-1]  # then version 1 again
    assert (
        rolled_back.startswith('{"name":"iris","version":1,') and '"is_current":true' in rolled_back
    )
