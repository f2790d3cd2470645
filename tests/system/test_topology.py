"""The one-machine topology: nginx (deploy/nginx/one-machine.conf) in front of two gunicorn
replicas of two workers each, sharing one model folder. Real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing.fastml_api import train
from testing.servers import ADMIN
from testing.topology import Topology, start_topology, stop_topology
from tests.system.fault_tools import children_of
from tests.system.test_load_client import CLIENT_TIMEOUT_SECONDS, run_client
from tests.system.test_readme import check_tour_output, project_copy, run_tour  # noqa: F401

pytestmark = pytest.mark.system
LOAD_REQUESTS = 100_000
KILL_AFTER_SECONDS = 5
# What the load client reports for an answer cut off by its worker's death.
CUT_ANSWER_ERRORS = {"answer cut", "disconnected"}


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    running = start_topology(tmp_path)
    try:
        yield running
    finally:
        stop_topology(running)


@pytest.mark.timeout(360)  # three jobs, each in a freshly spawned process
def test_the_readme_tour_through_nginx_is_seen_alike_by_both_replicas(
    project_copy: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The tour reads the generated admin's password from the project's model folder: the
    # replicas share that folder, and the first one generates the admin.
    shared = start_topology(
        tmp_path / "topology", model_dir=project_copy / "ML" / "saved_models", admin=None
    )
    try:
        check_tour_output(run_tour(project_copy, shared.url.removeprefix("http://")))
        check_replicas_agree_after_the_tour(shared)
    finally:
        stop_topology(shared)


def generated_admin(topology: Topology) -> tuple[str, str]:
    """The admin the first replica generated, read from the shared model folder."""
    text = (topology.model_dir / "_state" / "admin_credentials.txt").read_text()
    name, _, password = text.strip().partition(":")
    return name, password


def check_replicas_agree_after_the_tour(topology: Topology) -> None:
    """Each replica, asked directly, shows the tour's jobs and versions the same way."""
    views = []
    for replica in topology.replicas:
        with httpx.Client(base_url=replica.url, auth=generated_admin(topology), timeout=30) as c:
            jobs = c.get("/jobs").json()
            model = c.get("/models/iris").json()
            version = c.get("/models/iris/versions/2").json()
        views.append((jobs, model, version))
    assert views[0] == views[1]
    jobs, model, _ = views[0]
    assert [job["status"] for job in jobs["jobs"]] == ["succeeded"] * 3  # 2 train, 1 predict
    assert model["current_version"] == 1  # the tour rolls back to version 1 at its end


def test_wrong_passwords_spread_over_both_replicas_are_throttled_as_one(
    topology: Topology,
) -> None:
    limit = 10  # FASTML_LOGIN_MAX_FAILURES' default
    statuses = []
    for attempt in range(limit):
        replica = topology.replicas[attempt % 2]
        statuses.append(httpx.get(f"{replica.url}/models", auth=("admin", "wrong")).status_code)
    assert statuses == [401] * limit
    for replica in topology.replicas:  # past the limit, even the right password waits
        refused = httpx.get(f"{replica.url}/models", auth=ADMIN)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) > 0
    through_nginx = httpx.get(f"{topology.url}/models", auth=ADMIN)
    assert through_nginx.status_code == 429


@pytest.mark.timeout(CLIENT_TIMEOUT_SECONDS + 120)
def test_a_hundred_thousand_predictions_through_nginx_survive_a_killed_worker(
    topology: Topology, tmp_path: Path, iris_train_csv: Path
) -> None:
    predict_through_nginx_killing_a_worker(topology, tmp_path, iris_train_csv, LOAD_REQUESTS)


def predict_through_nginx_killing_a_worker(
    topology: Topology,
    tmp_path: Path,
    iris_train_csv: Path,
    requests: int,
    auth: tuple[str, str] = ADMIN,
    kill_after_seconds: float = KILL_AFTER_SECONDS,
) -> None:
    """Trains a model on iris, then testing/async_predictions.py sends `requests` predictions
    through nginx; `kill_after_seconds` in, one gunicorn worker of the first replica is
    SIGKILLed. Every answer is 200: nginx sends what the dead one dropped on to the other
    replica. Only an answer the worker had begun to send when it died cannot be sent again
    (nginx has passed its head on): the client counts those as connection errors, at most
    one per request in flight."""
    model = "load"
    with httpx.Client(base_url=topology.url, auth=auth, timeout=30) as client:
        assert train(client, model, iris_train_csv)["status"] == "succeeded"
    report_path = tmp_path / "report.json"
    killed = threading.Event()

    def kill_a_worker_midway() -> None:
        time.sleep(kill_after_seconds)
        victim = children_of(topology.replicas[0].process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_a_worker_midway, daemon=True)
    killer.start()
    completed = run_client(
        str(requests),
        *("--url", topology.url, "--model", model, "--user", auth[0], "--password", auth[1]),
        *("--json", str(report_path)),
    )
    killer.join(timeout=30)
    assert killed.is_set(), "the load ended before a worker was killed"
    report = json.loads(report_path.read_text())
    text = f"{completed.stdout}{completed.stderr}\nnginx errors:\n{nginx_errors(topology)}"
    cut_at_the_kill = sum(report["client_errors"].values())
    assert report["requests_sent"] == requests, text
    assert report["answers"] + cut_at_the_kill == requests, text
    assert report["statuses"] == {"200": report["answers"]}, text  # nginx retried the rest
    assert set(report["client_errors"]) <= CUT_ANSWER_ERRORS, text
    assert cut_at_the_kill <= report["concurrency"], text


def nginx_errors(topology: Topology, last: int = 40) -> str:
    """The last `last` lines of nginx's error log, without its "temporarily disabled" notes."""
    lines = topology.nginx_output().splitlines()
    return "\n".join([line for line in lines if "temporarily disabled" not in line][-last:])
