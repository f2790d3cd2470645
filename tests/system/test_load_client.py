"""The load-test client and a fast-ml style client against real gunicorn servers."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ML.config import PROJECT_DIR
from testing.benchmark_report import CEILING_APP
from testing.fastml_api import ApiClient, LocalClient, multipart_body, train
from testing.servers import ADMIN, Server, start_server, stop_server

pytestmark = pytest.mark.system
SCRIPT = PROJECT_DIR / "testing" / "async_predictions.py"
TRAIN_CSV = PROJECT_DIR / "ML" / "data" / "train.csv"
CLIENT_TIMEOUT_SECONDS = 300
# The client reads credentials from these when no option is given; a test sets its own.
CREDENTIAL_ENV = ("FASTML_USER", "FASTML_PASSWORD", "SERVICE_USER", "SERVICE_PASS")


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    env.pop("FASTML_URL", None)
    return {**env, **extra}


def run_client(
    *args: str, cwd: Path = PROJECT_DIR, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--no-progress"],
        cwd=cwd,
        env=env if env is not None else client_env(),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=False,
    )


def run_as_admin(server: Server, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report_path = tmp_path / f"report-{time.monotonic_ns()}.json"
    completed = run_client(
        *args,
        "--url",
        server.url,
        "--user",
        ADMIN[0],
        "--password",
        ADMIN[1],
        "--json",
        str(report_path),
    )
    assert report_path.exists(), completed.stdout + completed.stderr
    return completed.returncode, json.loads(report_path.read_text())


def train_default_the_fastml_way(client: ApiClient) -> None:
    content_type, body = multipart_body(
        {"target_variable": "species"}, {"csv_file": ("train.csv", TRAIN_CSV.read_bytes())}
    )
    answer = client.post("/train_model", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def served(iris_server: Server) -> Server:
    """The session's iris server, with the fast-ml `default` model trained too."""
    with iris_server.client() as client:
        train_default_the_fastml_way(client)
    return iris_server


@pytest.fixture(scope="module")
def ceiling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("ceiling"), app=CEILING_APP, name="ceiling", admin=None
    )
    try:
        yield running
    finally:
        stop_server(running)


@pytest.mark.parametrize(("payload", "count"), [("json", 400), ("csv", 40), ("compat", 40)])
def test_every_payload_kind_against_the_real_server(
    served: Server, tmp_path: Path, payload: str, count: int
) -> None:
    code, report = run_as_admin(
        served, tmp_path, str(count), "--payload", payload, "--concurrency", "8"
    )
    assert code == 0, report
    assert report["requests_sent"] == count
    assert report["statuses"] == {"200": count}, report
    assert report["notes"] == []


def test_two_processes_give_one_merged_report(served: Server, tmp_path: Path) -> None:
    code, report = run_as_admin(served, tmp_path, "401", "--processes", "2", "--concurrency", "8")
    assert code == 0, report
    assert report["requests_planned"] == report["requests_sent"] == 401
    assert report["statuses"] == {"200": 401}
    assert report["concurrency"] == 8
    histogram = report["latency_histogram"]
    assert histogram["count"] == 401 == sum(count for _, count in histogram["buckets"])
    latency = report["latency_ms"]
    assert 0 <= latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]


@pytest.mark.parametrize(
    "args",
    [
        # An idle server answers before the next tick: the loop wakes a little early.
        ("600", "--rate", "300", "--duration", "5"),
        ("4000", "--rate", "2000", "--duration", "5"),  # the command of issue 13
    ],
)
def test_open_loop_never_measures_a_negative_latency(
    ceiling: Server, args: tuple[str, ...]
) -> None:
    completed = run_client(*args, "--url", ceiling.url, "--user", "any", "--password", "any")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert re.search(r"^answers\s+(\d+) \(200: \1\)$", completed.stdout, re.MULTILINE)
    assert "Traceback" not in completed.stderr


def test_ctrl_c_stops_every_process_and_still_reports(ceiling: Server) -> None:
    """Ctrl-C reaches the whole process group; the report covers what every process sent."""
    args = ["1000000", "--processes", "2", "--url", ceiling.url, "--user", "a", "--password", "b"]
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=PROJECT_DIR,
        env=client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell gives a foreground job
    )
    try:
        # The progress bar (stderr) shows answers once both processes run.
        progress = re.compile(r"\| *[1-9]\d*/1000000")
        seen = ""
        deadline = time.monotonic() + 120
        assert process.stderr is not None
        for _ in range(100_000):
            chunk = process.stderr.read(64)
            seen += chunk
            if progress.search(seen) or not chunk or time.monotonic() > deadline:
                break
        assert progress.search(seen), seen
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=30)  # reads and closes the pipes too
    assert process.returncode == 130, stdout + seen + stderr
    assert "stopped early    interrupted" in stdout
    sent = int(re.search(r"^requests sent +(\d+) of 1000000$", stdout, re.MULTILINE)[1])  # type: ignore[index]
    assert 0 < sent < 1_000_000
    assert re.search(rf"^answers +{sent} \(200: {sent}\)$", stdout, re.MULTILINE), stdout


def test_wrong_password_is_reported_with_what_to_do(server: Server) -> None:
    completed = run_client(
        "20", "--url", server.url, "--user", "admin", "--password", "wrong", "--concurrency", "2"
    )
    assert completed.returncode == 1
    assert "FAILED" in completed.stdout
    note = next(line for line in completed.stdout.splitlines() if line.startswith("note"))
    assert "refused the password of user 'admin' (from --password)" in note
    assert "--user NAME --password PASSWORD" in note


def readme_load_commands() -> list[str]:
    """The shell lines of the README's "Load testing" block that run the load client."""
    readme = (PROJECT_DIR / "README.md").read_text()
    section = readme.split("### Load testing", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if "testing/async_predictions.py" in line]


def test_readme_load_commands_work_after_the_quick_start(tmp_path: Path) -> None:
    """Every README load-test line, as written, against a server started as the quick start
    starts it (no user configured: a generated admin); only the request counts are smaller.
    """
    commands = readme_load_commands()
    assert len(commands) >= 4, commands
    running = start_server(tmp_path / "server", admin=None)
    try:
        credentials = (running.model_dir / "_state" / "admin_credentials.txt").read_text()
        name, _, password = credentials.strip().partition(":")
        admin = LocalClient(running.url, (name, password))
        job = train(admin, "iris", TRAIN_CSV)
        assert job["status"] == "succeeded", job
        train_default_the_fastml_way(admin)
        work_dir = tmp_path / "work"
        work_dir.mkdir()
        # The quick start's server keeps its state in ML/saved_models; this one in tmp_path.
        env = client_env(FASTML_URL=running.url, FASTML_MODEL_DIR=str(running.model_dir))
        for command in commands:
            words = shlex.split(command)
            assert words[:2] == [".venv/bin/python", "testing/async_predictions.py"], command
            count = "40" if "csv" in words or "compat" in words else "300"
            args = [count, *words[3:]]
            completed = run_client(*args, cwd=work_dir, env=env)
            assert completed.returncode == 0, f"{command}\n{completed.stdout}{completed.stderr}"
            assert "result           OK" in completed.stdout
            assert f"as user 'admin' from {running.model_dir}" in completed.stderr
    finally:
        stop_server(running)
    for option, written in (("--json", "report.json"), ("--plot", "latency.png")):
        if any(option in command for command in commands):
            assert (work_dir / written).stat().st_size > 0


FASTML_STYLE_CLIENT = """
import asyncio, sys, aiohttp

URL = sys.argv[1] + "/get_prediction"

async def fetch(session, i):
    data = aiohttp.FormData()
    data.add_field("csv_file", open("ML/data/test.csv", "rb"), filename="test.csv")
    data.add_field("target_variable", "species")
    async with session.post(URL, data=data, auth=aiohttp.BasicAuth("admin", "password")) as answer:
        return await answer.json()

async def main(n):
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(fetch(session, i) for i in range(n)))
    print(results[0])
    for r in results:
        assert r["status"] == "success" and r["output"].startswith("Test accuracy : ")

asyncio.run(main(int(sys.argv[2])))
"""


def test_a_fastml_style_client_works_unmodified(served: Server, tmp_path: Path) -> None:
    """The fast-ml template's client shape: multipart test.csv + species to /get_prediction."""
    script = tmp_path / "fastml_client.py"
    script.write_text(FASTML_STYLE_CLIENT)
    completed = subprocess.run(
        [sys.executable, str(script), served.url, "50"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Test accuracy : " in completed.stdout
