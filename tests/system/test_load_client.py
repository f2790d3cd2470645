"""The load-test client and a fast-ml style client against a real gunicorn server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ML.config import PROJECT_DIR
from tests.conftest import ADMIN
from tests.system.conftest import Server
from tests.system.test_tour import train

pytestmark = pytest.mark.system


def run_client(server: Server, tmp_path: Path, *args: str) -> tuple[int, dict]:
    report_path = tmp_path / f"report-{time.monotonic_ns()}.json"
    completed = subprocess.run(
        [
            sys.executable,
            "testing/async_predictions.py",
            *args,
            "--url",
            server.url,
            "--user",
            ADMIN[0],
            "--password",
            ADMIN[1],
            "--no-progress",
            "--json",
            str(report_path),
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert report_path.exists(), completed.stdout + completed.stderr
    return completed.returncode, json.loads(report_path.read_text())


def test_every_payload_kind_against_the_real_server(server: Server, tmp_path: Path) -> None:
    with server.client() as client:
        train(client, PROJECT_DIR / "ML" / "data" / "train.csv")
        compat = client.post(
            "/train_model",
            files={"csv_file": ("train.csv", (PROJECT_DIR / "ML/data/train.csv").read_bytes())},
            data={"target_variable": "species"},
        )
        assert compat.status_code == 200, compat.text
    for payload, count in [("json", 400), ("csv", 40), ("compat", 40)]:
        code, report = run_client(
            server, tmp_path, str(count), "--payload", payload, "--concurrency", "8"
        )
        assert code == 0, report
        assert report["requests_sent"] == count
        assert report["statuses"] == {"200": count}, report


def test_wrong_password_is_reported_not_hidden(server: Server, tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "testing/async_predictions.py",
            "20",
            "--url",
            server.url,
            "--user",
            "admin",
            "--password",
            "wrong",
            "--no-progress",
            "--concurrency",
            "2",
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert "401" in completed.stdout or "429" in completed.stdout


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


def test_a_fastml_style_client_works_unmodified(server: Server, tmp_path: Path) -> None:
    """The fast-ml template's client shape: multipart test.csv + species to /get_prediction."""
    with server.client() as client:
        compat = client.post(
            "/train_model",
            files={"csv_file": ("train.csv", (PROJECT_DIR / "ML/data/train.csv").read_bytes())},
            data={"target_variable": "species"},
        )
        assert compat.status_code == 200, compat.text
    script = tmp_path / "fastml_client.py"
    script.write_text(FASTML_STYLE_CLIENT)
    completed = subprocess.run(
        [sys.executable, str(script), server.url, "50"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Test accuracy : " in completed.stdout
