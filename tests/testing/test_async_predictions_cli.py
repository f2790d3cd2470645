"""The load-test client against a real HTTP server on 127.0.0.1 (testing/async_predictions.py).

The peer is a tiny aiohttp.web server speaking the three fastml calls with basic auth: a
stand-in for the real server, which has its own system test. Run it alone to measure the
client:  PYTHONPATH=. python tests/testing/test_async_predictions_cli.py PORT
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from testing.async_predictions import main, run_load
from testing.fastml_api import basic_auth_header
from testing.load_config import (
    LoadConfig,
    LoadTestError,
    Payload,
    RemoteTargetRefused,
    check_loopback,
)
from testing.servers import free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT_DIR / "testing" / "async_predictions.py"
PEER_USER, PEER_PASSWORD = "tester", "s3cret-pw"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_CSV = """sepal_length,sepal_width,petal_length,petal_width,species
5.1,3.5,1.4,0.2,setosa
4.9,3.0,1.4,0.2,setosa
7.0,3.2,4.7,1.4,versicolor
6.4,3.2,4.5,1.5,versicolor
6.3,3.3,6.0,2.5,virginica
5.8,2.7,5.1,1.9,virginica
"""
# The model "slow" answers after this long: lets tests stop a run mid-way.
SLOW_SECONDS = 0.02
SUBPROCESS_TIMEOUT_SECONDS = 120


# --- the stand-in peer server ---------------------------------------------------------------


def make_peer_app() -> web.Application:
    expected_auth = basic_auth_header(PEER_USER, PEER_PASSWORD)

    @web.middleware
    async def require_basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected_auth:
            return _json(
                {"detail": "Incorrect username or password"},
                status=401,
                headers={"WWW-Authenticate": "Basic"},
            )
        return await handler(request)

    app = web.Application(middlewares=[require_basic_auth])
    app.router.add_post("/models/{name}/predict", predict_json)
    app.router.add_post("/models/{name}/predict/csv", predict_csv)
    app.router.add_post("/get_prediction", get_prediction)
    return app


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


async def predict_json(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "slow":
        await asyncio.sleep(SLOW_SECONDS)
    rows = orjson.loads(await request.read()).get("rows")
    valid = (
        isinstance(rows, list)
        and rows
        and all(
            isinstance(row, dict)
            and tuple(row) == FEATURES
            and all(isinstance(v, int | float) for v in row.values())
            for row in rows
        )
    )
    if not valid:
        return _json({"detail": f"rows must hold numbers for {FEATURES}"}, status=422)
    return _json({"model": name, "version": 1, "predictions": ["setosa"] * len(rows)})


async def _read_csv_upload(request: web.Request) -> tuple[list[list[str]], str | None]:
    form = await request.post()
    upload = form.get("csv_file")
    if not isinstance(upload, web.FileField):
        raise web.HTTPUnprocessableEntity(text="csv_file (a file) is required")
    rows = list(csv.reader(io.StringIO(upload.file.read().decode())))
    target = form.get("target_variable")
    return rows, target if isinstance(target, str) else None


async def predict_csv(request: web.Request) -> web.Response:
    rows, _ = await _read_csv_upload(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*rows[0], "prediction"])
    writer.writerows([*row, "setosa"] for row in rows[1:])
    return web.Response(text=out.getvalue(), content_type="text/csv")


async def get_prediction(request: web.Request) -> web.Response:
    rows, target = await _read_csv_upload(request)
    if target is None or target not in rows[0]:
        return _json({"detail": "target_variable must name a column"}, status=422)
    return _json({"status": "success", "code": 200, "output": "Test accuracy : 97.78 %"})


@pytest.fixture(scope="module")
def peer_url() -> Iterator[str]:
    """The peer served from its own thread and event loop on a free 127.0.0.1 port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_peer_app(), access_log=None, shutdown_timeout=5)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


# --- the client -----------------------------------------------------------------------------


@pytest.fixture
def iris_csv(tmp_path: Path) -> Path:
    path = tmp_path / "test.csv"
    path.write_text(IRIS_CSV)
    return path


def config(url: str, csv_path: Path, **overrides: object) -> LoadConfig:
    settings: dict[str, object] = {
        "url": url,
        "user": PEER_USER,
        "password": PEER_PASSWORD,
        "csv_path": csv_path,
        "concurrency": 8,
        "show_progress": False,
        "timeout": 10.0,
    }
    settings.update(overrides)
    return LoadConfig(**settings)  # type: ignore[arg-type]


def cli_args(url: str, csv_path: Path, *extra: str) -> list[str]:
    return [
        "--url",
        url,
        "--csv",
        str(csv_path),
        "--user",
        PEER_USER,
        "--password",
        PEER_PASSWORD,
        "--no-progress",
        *extra,
    ]


def test_json_rows_all_answered_200(peer_url: str, iris_csv: Path) -> None:
    report = asyncio.run(run_load(config(peer_url, iris_csv, requests=500)))

    assert report.requests_sent == 500
    assert report.statuses == {200: 500}
    assert report.client_errors == {}
    assert report.latency.count == 500
    assert report.is_success
    assert report.stop_reason == "completed"
    assert report.url == f"{peer_url}/models/iris/predict"


@pytest.mark.parametrize("payload", [Payload.CSV, Payload.COMPAT])
def test_csv_upload_and_fast_ml_call_answered_200(
    peer_url: str, iris_csv: Path, payload: Payload
) -> None:
    report = asyncio.run(run_load(config(peer_url, iris_csv, requests=30, payload=payload)))

    assert report.statuses == {200: 30}
    assert report.is_success


def test_wrong_password_counts_401s_and_exits_1(
    peer_url: str, iris_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(peer_url, iris_csv, "--json", str(tmp_path / "out.json"))
    args[args.index(PEER_PASSWORD)] = "wrong"

    assert main(["40", *args]) == 1

    data = json.loads((tmp_path / "out.json").read_text())
    assert data["statuses"] == {"401": 40}
    assert data["success"] is False
    assert "401: 40" in capsys.readouterr().out


def test_duration_stops_the_run_early(peer_url: str, iris_csv: Path) -> None:
    settings = config(
        peer_url, iris_csv, requests=1_000_000, model="slow", concurrency=4, duration=0.3
    )
    report = asyncio.run(run_load(settings))

    assert report.stop_reason == "duration"
    assert 0 < report.requests_sent < 1_000_000
    assert report.statuses == {200: report.requests_sent}
    assert report.is_success


def test_rate_mode_sends_every_request(peer_url: str, iris_csv: Path) -> None:
    report = asyncio.run(run_load(config(peer_url, iris_csv, requests=60, rate=300.0)))

    assert report.statuses == {200: 60}
    assert report.rate == 300.0
    assert report.latency.count == 60
    assert "open loop at 300 req/s" in report.format_text()


def test_rate_mode_counts_late_requests_and_their_wait(peer_url: str, iris_csv: Path) -> None:
    # 2 in flight at 20 ms each serve at most 100 req/s, far below the 1000 req/s asked:
    # requests start late, and their latency includes the wait since their schedule.
    settings = config(peer_url, iris_csv, requests=40, rate=1000.0, concurrency=2, model="slow")
    report = asyncio.run(run_load(settings))

    assert report.statuses == {200: 40}
    assert report.late > 0
    # Request 39 is scheduled at 39 ms but cannot start before 19 rounds of 20 ms are over.
    assert report.latency.max > 0.3


def test_non_loopback_url_is_refused_before_connecting(
    iris_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 192.0.2.1 is TEST-NET-1: never routed, so this would hang if a connection were tried.
    assert main(["5", *cli_args("http://192.0.2.1:8000", iris_csv, "--timeout", "1")]) == 2
    assert "--allow-remote" in capsys.readouterr().err

    with pytest.raises(RemoteTargetRefused, match="non-loopback"):
        asyncio.run(run_load(config("http://192.0.2.1:8000", iris_csv, requests=5)))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://127.0.0.7:1", "http://localhost:8000/"]
)
def test_loopback_urls_are_accepted(url: str) -> None:
    asyncio.run(check_loopback(url))


def test_connection_refused_is_counted(iris_csv: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    report = asyncio.run(run_load(config(url, iris_csv, requests=5, concurrency=2)))

    assert report.client_errors == {"connection refused": 5}
    assert report.statuses == {}
    assert not report.is_success


def test_timeout_is_counted(peer_url: str, iris_csv: Path) -> None:
    settings = config(peer_url, iris_csv, requests=4, concurrency=2, model="slow", timeout=0.001)
    report = asyncio.run(run_load(settings))

    assert report.client_errors == {"timeout": 4}
    assert report.statuses == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--csv", "/nonexistent/test.csv"], "cannot read the CSV file"),
        (["--payload", "compat", "--target", "label"], "target column 'label' not found"),
        (["--model", "../etc"], "model name '../etc' is not valid"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--json", "/nonexistent/dir/out.json"], "does not exist"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    peer_url: str,
    iris_csv: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert main(["5", *cli_args(peer_url, iris_csv), *args]) == 2
    assert message in capsys.readouterr().err


def test_plot_and_json_written_by_the_cli(peer_url: str, iris_csv: Path, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    args = cli_args(peer_url, iris_csv, "--json", str(out_json), "--plot", str(out_png))

    assert main(["100", "--concurrency", "4", *args]) == 0

    assert json.loads(out_json.read_text())["statuses"] == {"200": 100}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loadconfig_refuses_a_bad_url() -> None:
    with pytest.raises(LoadTestError, match="--url must look like"):
        LoadConfig(url="127.0.0.1:8000")


def test_runs_as_a_script_like_the_fast_ml_original(
    peer_url: str, iris_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    # Credentials from the environment, as a deployment would pass them.
    env = {**os.environ, "FASTML_USER": PEER_USER, "FASTML_PASSWORD": PEER_PASSWORD}
    command = [
        sys.executable,
        str(SCRIPT),
        "50",
        "--url",
        peer_url,
        "--no-progress",
        "--csv",
        str(iris_csv),
        "--json",
        str(out),
    ]

    result = subprocess.run(
        command,
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["requests_sent"] == 50
    assert data["statuses"] == {"200": 50}
    assert data["client_errors"] == {}
    assert "throughput" in result.stdout


if __name__ == "__main__":
    # python tests/testing/test_async_predictions_cli.py PORT: serve the peer for benchmarks.
    web.run_app(make_peer_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None)
