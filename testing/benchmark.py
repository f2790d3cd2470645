"""One-run benchmark: fastml's predict route against the bare HTTP stack, and the model in-process.

    python testing/benchmark.py [--duration 10] [--pairs 3] [--workers 2]
                                [--out docs/benchmarks.md] [--quick]

On one machine, in one run: starts fastml (gunicorn, Uvicorn workers, a fresh temp model dir),
trains `iris`, starts testing/ceiling_app.py under the same gunicorn config, then for each
concurrency runs wrk against the predict route and against the ceiling in alternating pairs.
This machine's speed drifts within seconds, so every predict pass is judged against the
ceiling pass right after it (ratio = predict req/s / ceiling req/s). It also runs our own load
client and times the trained model's `predict` in-process, then writes a markdown report,
keeping the notes below the marker line of an existing report.

Exit code: 0 when every request was answered 2xx, 1 when some pass had errors (the report is
still written), 2 when the benchmark could not start, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import functools
import http.client
import importlib
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):
    # Run as `python testing/benchmark.py`: make the project root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testing.async_predictions import LoadConfig, Payload, run_load
from testing.load_report import LoadReport

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_DIR / "docs" / "benchmarks.md"
NOTES_MARKER = "<!-- notes below are kept by testing/benchmark.py -->"
GUNICORN_CONFIG = "gunicorn/gunicorn-config.py"
FASTML_APP = "wsgi:app"
CEILING_APP = "testing.ceiling_app:app"
TRAIN_CSV = PROJECT_DIR / "ML" / "data" / "train.csv"
TEST_CSV = PROJECT_DIR / "ML" / "data" / "test.csv"
TARGET = "species"
MODEL = "iris"
ESTIMATOR = "random_forest"
ESTIMATOR_PARAMS: dict[str, Any] = {"n_estimators": 100}
USER = "admin"
PASSWORD = "password"  # noqa: S105 (the throwaway server's admin, as in the fast-ml template)
PREDICT_ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
PREDICT_BODY = json.dumps({"rows": [PREDICT_ROW]}, separators=(",", ":"))

CONCURRENCIES = (1, 16, 64)
BATCH_ROWS = (1, 8, 64, 512)
WARMUP_REQUESTS = 300
OWN_CLIENT_CONCURRENCY = 64
OWN_CLIENT_MAX_REQUESTS = 200_000
# Generous, so that a slow predict route shows as high latency rather than as wrk timeouts.
WRK_TIMEOUT_SECONDS = 10
READY_DEADLINE_SECONDS = 60.0
JOB_DEADLINE_SECONDS = 300.0
STOP_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.2
# The server's storage and identity are the benchmark's own; other FASTML_ knobs pass through.
OWNED_ENV = (
    "FASTML_BIND",
    "FASTML_WORKERS",
    "FASTML_MODEL_DIR",
    "FASTML_STATE_DIR",
    "FASTML_LOG_PATH",
    "FASTML_SECRET_KEY",
    "FASTML_BROKER_URL",
    "FASTML_USERS_FILE",
    "FASTML_SERVICE_USER",
    "FASTML_SERVICE_PASS",
    "SERVICE_USER",
    "SERVICE_PASS",
)
WRK_INSTALL_COMMAND = ("apt-get", "install", "-y", "wrk")


class BenchmarkError(Exception):
    """The benchmark cannot go on: a server that does not start, a failed job, a bad option."""


# -- wrk output -------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h)$")
_MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_REQUESTS_PER_SECOND = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)\s*$", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(\d+(?:\.\d+)?)%\s+(\S+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in (\S+), ", re.MULTILINE)
_NON_2XX = re.compile(r"^\s+Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")


def duration_ms(text: str) -> float:
    """A wrk duration such as `98.00us`, `1.05ms`, `1.64s` or `2.00m`, in milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a wrk duration; expected a number followed by us, ms, s, m or h"
        )
    return float(match[1]) * _MS_PER_UNIT[match[2]]


@dataclass(frozen=True)
class WrkResult:
    """What one wrk pass measured; `non_2xx` counts answers with a status of 400 or more."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def has_errors(self) -> bool:
        return self.non_2xx > 0 or any(self.socket_errors.values())

    def describe_errors(self) -> str:
        """`none`, or e.g. `non-2xx 12, timeout 3`."""
        parts = [f"non-2xx {self.non_2xx}"] if self.non_2xx else []
        parts += [f"{kind} {n}" for kind, n in self.socket_errors.items() if n]
        return ", ".join(parts) or "none"


def parse_wrk_output(text: str) -> WrkResult:
    """Parse what `wrk --latency` prints; ValueError naming the line that is missing."""
    rate = _REQUESTS_PER_SECOND.search(text)
    total = _TOTAL.search(text)
    if rate is None or total is None:
        missing = "Requests/sec:" if rate is None else "N requests in T"
        raise ValueError(
            f"wrk output has no {missing!r} line; run wrk with --latency and pass its stdout:\n"
            f"{text}"
        )
    percentiles = {float(m[1]): duration_ms(m[2]) for m in _PERCENTILE.finditer(text)}
    if 50.0 not in percentiles or 99.0 not in percentiles:
        raise ValueError(
            f"wrk output has no latency distribution with 50% and 99%; run wrk with --latency:\n"
            f"{text}"
        )
    non_2xx = _NON_2XX.search(text)
    socket_errors = _SOCKET_ERRORS.search(text)
    return WrkResult(
        requests_per_second=float(rate[1]),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        requests=int(total[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=(
            dict(zip(SOCKET_ERROR_KINDS, map(int, socket_errors.groups()), strict=True))
            if socket_errors
            else {}
        ),
    )


# -- pairs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A predict pass and the ceiling pass run right after it, at the same concurrency."""

    predict: WrkResult
    ceiling: WrkResult

    @property
    def ratio(self) -> float:
        """Predict throughput as a fraction of the ceiling's; NaN when the ceiling answered none."""
        if self.ceiling.requests_per_second <= 0:
            return math.nan
        return self.predict.requests_per_second / self.ceiling.requests_per_second

    @property
    def has_errors(self) -> bool:
        return self.predict.has_errors or self.ceiling.has_errors


@dataclass(frozen=True)
class PairSummary:
    """The pair with the median ratio, a real measured pair, and the spread of the ratio."""

    median: Pair
    ratio_min: float
    ratio_max: float
    pairs: tuple[Pair, ...]

    @property
    def has_errors(self) -> bool:
        return any(pair.has_errors for pair in self.pairs)


def summarize_pairs(pairs: Sequence[Pair]) -> PairSummary:
    """Median pair by ratio (the lower middle one for an even count; NaN ratios sort last)."""
    if not pairs:
        raise ValueError("no pairs to summarize; run at least one pair (--pairs 1)")
    ordered = sorted(pairs, key=lambda pair: (math.isnan(pair.ratio), pair.ratio))
    ratios = [pair.ratio for pair in pairs if not math.isnan(pair.ratio)]
    return PairSummary(
        median=ordered[(len(ordered) - 1) // 2],
        ratio_min=min(ratios, default=math.nan),
        ratio_max=max(ratios, default=math.nan),
        pairs=tuple(pairs),
    )


# -- the report file --------------------------------------------------------------------------


def merge_with_notes(generated: str, existing: str | None) -> str:
    """The generated report, then the marker line and whatever followed it in `existing`."""
    notes = "\n"
    if existing is not None and NOTES_MARKER in existing:
        notes = existing.split(NOTES_MARKER, 1)[1] or "\n"
    merged = f"{generated.rstrip()}\n\n{NOTES_MARKER}{notes}"
    return merged if merged.endswith("\n") else merged + "\n"


def check_out_path(path: Path) -> None:
    """Fail before a run of minutes, not after it, when the report could not be written safely."""
    if path.is_dir():
        raise BenchmarkError(f"--out {path} is a folder; pass a file path such as {path}/bench.md")
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text.strip() and NOTES_MARKER not in text:
            raise BenchmarkError(
                f"{path} exists without the line {NOTES_MARKER!r}, so its content would be "
                "lost; add that line above what should be kept (nothing above it is kept), "
                "delete the file, or pass another --out"
            )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise BenchmarkError(f"cannot write --out {path}: folder {parent} is not writable")


def write_report(path: Path, generated: str) -> None:
    """Write the report atomically, keeping the notes below the marker of the existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text(encoding="utf-8") if path.exists() else None
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        temp_path.write_text(merge_with_notes(generated, existing), encoding="utf-8")
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)


# -- the machine ------------------------------------------------------------------------------


def machine_description() -> str:
    """e.g. `2 CPUs (Intel(R) Xeon(R) ...), 7.8 GiB RAM, Linux 6.8.0`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    memory = f"{int(mem_kib.split()[0]) / 1024**2:.1f} GiB RAM" if mem_kib else "unknown RAM"
    return f"{cpus} CPUs ({model}), {memory}, {platform.system()} {platform.release()}"


def _proc_field(path: str, name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return None


def git_revision() -> str:
    """The short commit, plus `dirty` when the working tree has changes."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        changes = _git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} dirty" if changes else commit


def _git(*args: str) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout.strip()


# -- servers ----------------------------------------------------------------------------------


@dataclass
class GunicornServer:
    name: str
    url: str
    command: list[str]
    process: subprocess.Popen[bytes]
    output_path: Path

    def output_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.output_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no output)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(port: int, workers: int, extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in OWNED_ENV}
    return {**env, "FASTML_BIND": f"127.0.0.1:{port}", "FASTML_WORKERS": str(workers), **extra}


def start_gunicorn(
    name: str, app: str, work_dir: Path, workers: int, extra_env: dict[str, str]
) -> GunicornServer:
    """Start `gunicorn -c gunicorn/gunicorn-config.py APP` on a free port; wait until ready."""
    port = free_port()
    # Each server gets its own control socket: two masters would otherwise share the default.
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        GUNICORN_CONFIG,
        "--control-socket",
        str(work_dir / f"{name}.ctl"),
        app,
    ]
    output_path = work_dir / f"{name}.out"
    with output_path.open("wb") as output:
        # A session of its own: Ctrl-C reaches this script, which then stops the server itself.
        process = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            env=server_env(port, workers, extra_env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = GunicornServer(name, f"http://127.0.0.1:{port}", command, process, output_path)
    try:
        wait_until_ready(server)
    except BaseException:
        stop_gunicorn(server)
        raise
    return server


def wait_until_ready(server: GunicornServer) -> None:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    for _ in range(int(READY_DEADLINE_SECONDS / POLL_SECONDS) + 1):
        if server.process.poll() is not None:
            raise BenchmarkError(
                f"the {server.name} server exited with code {server.process.returncode} before "
                f"it was ready; its output:\n{server.output_tail()}"
            )
        with contextlib.suppress(OSError):
            if http_request(server.url, "GET", "/health/ready")[0] == 200:
                return
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    raise BenchmarkError(
        f"the {server.name} server was not ready after {READY_DEADLINE_SECONDS:.0f} s "
        f"({shlex.join(server.command)}); its output:\n{server.output_tail()}"
    )


def stop_gunicorn(server: GunicornServer) -> None:
    """SIGTERM to the master (a graceful stop), then SIGKILL to its process group."""
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_DEADLINE_SECONDS)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        # The group is the master's own session (start_new_session): its workers and no one else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# -- talking to fastml ------------------------------------------------------------------------


def basic_auth_header(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def http_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body). http.client ignores proxy settings."""
    host_port = base_url.removeprefix("http://")
    connection = http.client.HTTPConnection(host_port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def multipart_body(
    fields: dict[str, str], files: dict[str, tuple[str, bytes]]
) -> tuple[str, bytes]:
    """(content type, body) of a multipart/form-data upload."""
    boundary = secrets.token_hex(16)
    parts = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    for name, (filename, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def train_model(server: GunicornServer) -> dict[str, Any]:
    """Train `iris` from ML/data/train.csv and wait for the job; returns the finished job."""
    content_type, body = multipart_body(
        {
            "target_variable": TARGET,
            "estimator": ESTIMATOR,
            "params": json.dumps(ESTIMATOR_PARAMS),
        },
        {"csv_file": (TRAIN_CSV.name, TRAIN_CSV.read_bytes())},
    )
    headers = {"Authorization": basic_auth_header(), "Content-Type": content_type}
    status, answer = http_request(server.url, "POST", f"/models/{MODEL}/train", body, headers)
    if status != 202:
        raise BenchmarkError(f"training was refused with status {status}: {answer!r}")
    job_id = json.loads(answer)["id"]
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    for _ in range(int(JOB_DEADLINE_SECONDS / POLL_SECONDS) + 1):
        status, answer = http_request(
            server.url, "GET", f"/jobs/{job_id}", headers={"Authorization": basic_auth_header()}
        )
        job: dict[str, Any] = json.loads(answer) if status == 200 else {}
        if job.get("status") == "succeeded":
            return job
        if job.get("status") not in ("queued", "running"):
            raise BenchmarkError(f"training job {job_id} did not succeed ({status}): {answer!r}")
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    raise BenchmarkError(
        f"training job {job_id} was still running after {JOB_DEADLINE_SECONDS:.0f} s; "
        f"see {server.output_path}"
    )


# -- load -------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package when running as root."""
    path = shutil.which("wrk")
    if path is not None:
        return path
    if os.geteuid() != 0:
        raise BenchmarkError(
            f"wrk is not installed; install it with: sudo {shlex.join(WRK_INSTALL_COMMAND)}"
        )
    print(f"wrk not found; running {shlex.join(WRK_INSTALL_COMMAND)}", file=sys.stderr)
    installed = subprocess.run(WRK_INSTALL_COMMAND, check=False, timeout=600)
    if installed.returncode != 0:
        # A fresh container has no package lists yet.
        subprocess.run(["apt-get", "update"], check=False, timeout=600)
        subprocess.run(WRK_INSTALL_COMMAND, check=False, timeout=600)
    path = shutil.which("wrk")
    if path is None:
        raise BenchmarkError(
            f"could not install wrk with {shlex.join(WRK_INSTALL_COMMAND)}; install it by hand"
        )
    return path


def lua_string(text: str) -> str:
    """`text` as a Lua string literal: printable ASCII kept, everything else as \\ddd bytes."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\' or not 32 <= byte < 127:
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def wrk_script(body: str, headers: dict[str, str]) -> str:
    """A wrk Lua script that POSTs `body` with `headers` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def wrk_threads(concurrency: int) -> int:
    return min(2, concurrency)


def wrk_command(
    wrk: str, url: str, concurrency: int, duration: int, script_path: Path | str
) -> list[str]:
    return [
        wrk,
        f"-t{wrk_threads(concurrency)}",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        f"{WRK_TIMEOUT_SECONDS}s",
        "-s",
        str(script_path),
        url,
    ]


def run_wrk(wrk: str, url: str, concurrency: int, duration: int, script_path: Path) -> WrkResult:
    command = wrk_command(wrk, url, concurrency, duration, script_path)
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=duration + 120
    )
    if completed.returncode != 0:
        raise BenchmarkError(
            f"{shlex.join(command)} failed with code {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return parse_wrk_output(completed.stdout)


def run_pairs(
    wrk: str,
    predict_url: str,
    ceiling_url: str,
    script_path: Path,
    concurrency: int,
    duration: int,
    pairs: int,
) -> PairSummary:
    measured = []
    for index in range(pairs):
        predict = run_wrk(wrk, predict_url, concurrency, duration, script_path)
        ceiling = run_wrk(wrk, ceiling_url, concurrency, duration, script_path)
        pair = Pair(predict, ceiling)
        measured.append(pair)
        print(
            f"c={concurrency} pair {index + 1}/{pairs}: predict "
            f"{predict.requests_per_second:.1f} req/s, ceiling "
            f"{ceiling.requests_per_second:.1f} req/s, ratio {pair.ratio:.4f}"
            + (" (errors)" if pair.has_errors else ""),
            file=sys.stderr,
        )
    return summarize_pairs(measured)


def load_config(
    base_url: str, requests: int, concurrency: int, duration: float | None
) -> LoadConfig:
    return LoadConfig(
        requests=requests,
        url=base_url,
        model=MODEL,
        user=USER,
        password=PASSWORD,
        concurrency=concurrency,
        duration=duration,
        payload=Payload.JSON,
        csv_path=TEST_CSV,
        target=TARGET,
        show_progress=False,
    )


def run_own_client(
    base_url: str, requests: int, concurrency: int, duration: float | None
) -> LoadReport:
    return asyncio.run(run_load(load_config(base_url, requests, concurrency, duration)))


def warm_up(server: GunicornServer) -> None:
    report = run_own_client(server.url, WARMUP_REQUESTS, 8, None)
    if not report.is_success:
        raise BenchmarkError(
            f"warm-up requests to the {server.name} server failed: statuses {report.statuses}, "
            f"client errors {report.client_errors}; see {server.output_path}"
        )


# -- in-process -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InProcessRow:
    rows: int
    pipeline_us: float
    fast_us: float | None


@dataclass(frozen=True)
class InProcessResult:
    rows: list[InProcessRow]
    model_summary: str
    fast_note: str


def time_per_call(call: Callable[[], object], repeats: int) -> float:
    """Seconds per call: the median of `repeats` timings of as many calls as fill ~0.2 s."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return statistics.median(timer.repeat(repeat=repeats, number=number)) / number


def iris_frame(rows: int) -> Any:
    """`rows` iris feature rows from ML/data/test.csv, cycled."""
    import numpy as np
    import pandas as pd

    features = pd.read_csv(TEST_CSV).drop(columns=[TARGET])
    return features.iloc[np.arange(rows) % len(features)].reset_index(drop=True)


def load_fast_pipeline(pipeline: Any) -> tuple[Any | None, str]:
    """CompiledPipeline compiled for `pipeline` when ML/forest_inference.py exists, and a note."""
    try:
        module = importlib.import_module("ML.forest_inference")
    except ModuleNotFoundError as exc:
        if exc.name != "ML.forest_inference":
            raise
        return None, "ML/forest_inference.py does not exist"
    # An optional column: a half-written module must not cost the whole run.
    try:
        fast = module.CompiledPipeline.compile(pipeline)
    except Exception as exc:
        return None, f"CompiledPipeline.compile failed ({type(exc).__name__}: {exc})"
    if fast is None:
        return None, "CompiledPipeline.compile returned None: this pipeline is not supported"
    return fast, "CompiledPipeline.predict(float64 matrix) from ML/forest_inference.py"


def measure_in_process(model_dir: Path, repeats: int) -> InProcessResult:
    """Time the trained model's predict in this process, loaded as the server loads it."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from ML.model_store import ModelStore
    from ML.secret_key import load_or_create_secret

    store = ModelStore(model_dir, load_or_create_secret(None, model_dir / "_state"))
    loaded = store.load_current(MODEL)
    pipeline = loaded.pipeline
    fast, fast_note = load_fast_pipeline(pipeline)
    measured = []
    # One thread, as the gunicorn config gives every worker.
    with threadpool_limits(limits=1):
        for rows in BATCH_ROWS:
            frame = iris_frame(rows)
            pipeline_s = time_per_call(functools.partial(pipeline.predict, frame), repeats)
            fast_s = None
            if fast is not None:
                matrix = frame[list(fast.feature_names)].to_numpy(dtype=np.float64)
                if not np.array_equal(fast.predict(matrix), pipeline.predict(frame)):
                    fast_note += f"; WARNING: its labels differ from the pipeline's at {rows} rows"
                fast_s = time_per_call(functools.partial(fast.predict, matrix), repeats)
            measured.append(
                InProcessRow(rows, pipeline_s * 1e6, None if fast_s is None else fast_s * 1e6)
            )
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    summary = f"`{MODEL}` version {loaded.version}: {type(estimator).__name__}" + (
        f" with {len(estimator.estimators_)} trees" if hasattr(estimator, "estimators_") else ""
    )
    return InProcessResult(measured, summary, fast_note)


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    started: datetime.datetime
    command: str
    duration: int
    pairs: int
    workers: int
    wrk_version: str
    load_average: tuple[float, float, float]
    passed_env: dict[str, str]


@dataclass(frozen=True)
class OwnClientRow:
    target: str
    report: LoadReport


def format_report(
    info: RunInfo,
    summaries: dict[int, PairSummary],
    own_client: list[OwnClientRow],
    in_process: InProcessResult,
) -> str:
    lines = [
        "# fastml benchmarks",
        "",
        f"Generated by `testing/benchmark.py` on {info.started:%Y-%m-%d %H:%M} UTC. "
        "Everything above the marker line is rewritten by each run; notes below it are kept.",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{info.command}` |",
        f"| git commit | `{git_revision()}` |",
        f"| machine | {machine_description()} |",
        f"| load average at start | {' / '.join(f'{x:.2f}' for x in info.load_average)} |",
        f"| software | Python {platform.python_version()}, {info.wrk_version} |",
        f"| servers | `gunicorn -c {GUNICORN_CONFIG} {FASTML_APP}` and "
        f"`... {CEILING_APP}`, {info.workers} Uvicorn workers each, on 127.0.0.1 |",
        f"| model | `{MODEL}`: {ESTIMATOR} {json.dumps(ESTIMATOR_PARAMS)}, trained from "
        f"ML/data/{TRAIN_CSV.name} |",
        f"| wrk pass | `wrk -t<1 at c=1, else 2> -c<C> -d{info.duration}s --latency --timeout "
        f"{WRK_TIMEOUT_SECONDS}s -s post.lua URL`, {info.pairs} pair(s) per concurrency |",
    ]
    if info.passed_env:
        passed = ", ".join(f"`{k}={v}`" for k, v in sorted(info.passed_env.items()))
        lines.append(f"| environment passed to the servers | {passed} |")
    lines += ["", *_http_section(summaries), "", *_own_client_section(summaries, own_client)]
    lines += ["", *_in_process_section(in_process)]
    return "\n".join(lines) + "\n"


def _http_section(summaries: dict[int, PairSummary]) -> list[str]:
    lines = [
        "## HTTP: the predict route against the HTTP stack ceiling",
        "",
        f"Both get the same request: `POST /models/{MODEL}/predict` with one JSON row "
        f"(`{PREDICT_BODY}`, {len(PREDICT_BODY)} bytes), `Content-Type: application/json` and "
        "the same `Authorization: Basic` header. The ceiling is testing/ceiling_app.py, a raw "
        "ASGI app under the same gunicorn config that reads the body and answers a constant "
        "prediction; it does **not** verify the Authorization header. The machine's speed "
        "drifts, so each predict pass is compared with the ceiling pass run right after it: "
        "ratio = predict req/s / ceiling req/s. Shown: the pair with the median ratio, and the "
        "lowest and highest ratio of all pairs.",
        "",
        "| concurrency | predict req/s | p50 ms | p99 ms | ceiling req/s | p50 ms | p99 ms "
        "| ratio (min-max) | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for concurrency, summary in summaries.items():
        p, c = summary.median.predict, summary.median.ceiling
        errors = "**yes, see below**" if summary.has_errors else "none"
        lines.append(
            f"| {concurrency} | {p.requests_per_second:.1f} | {_ms(p.p50_ms)} | {_ms(p.p99_ms)} "
            f"| {c.requests_per_second:.1f} | {_ms(c.p50_ms)} | {_ms(c.p99_ms)} "
            f"| {_ratio(summary.median.ratio)} ({_ratio(summary.ratio_min)}-"
            f"{_ratio(summary.ratio_max)}) | {errors} |"
        )
    lines += [
        "",
        "Every pass (errors are answers of status 400 or more, and wrk's socket errors):",
        "",
        "| concurrency | pair | predict req/s | p50 ms | p99 ms | errors | ceiling req/s "
        "| p50 ms | p99 ms | errors | ratio |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for concurrency, summary in summaries.items():
        for index, pair in enumerate(summary.pairs, start=1):
            p, c = pair.predict, pair.ceiling
            lines.append(
                f"| {concurrency} | {index} | {p.requests_per_second:.1f} | {_ms(p.p50_ms)} "
                f"| {_ms(p.p99_ms)} | {_flag(p)} | {c.requests_per_second:.1f} "
                f"| {_ms(c.p50_ms)} | {_ms(c.p99_ms)} | {_flag(c)} | {_ratio(pair.ratio)} |"
            )
    return lines


def _own_client_section(
    summaries: dict[int, PairSummary], own_client: list[OwnClientRow]
) -> list[str]:
    lines = [
        "## Our load client beside wrk",
        "",
        f"`testing/async_predictions.py` (`run_load`, JSON payload: one row of "
        f"ML/data/{TEST_CSV.name} per request, round-robin) at concurrency "
        f"{OWN_CLIENT_CONCURRENCY}, for the same duration as a wrk pass, at most "
        f"{OWN_CLIENT_MAX_REQUESTS:,} requests. Against the ceiling it shows the client's "
        "own limit.",
        "",
        "| client | target | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---|",
    ]
    wrk_summary = summaries.get(OWN_CLIENT_CONCURRENCY)
    if wrk_summary is not None:
        for target, result in (
            ("predict", wrk_summary.median.predict),
            ("ceiling", wrk_summary.median.ceiling),
        ):
            lines.append(
                f"| wrk (median pair) | {target} | {result.requests_per_second:.1f} "
                f"| {_ms(result.p50_ms)} | {_ms(result.p99_ms)} | {_flag(result)} |"
            )
    for row in own_client:
        latency = row.report.latency_ms()
        lines.append(
            f"| async_predictions | {row.target} | {row.report.throughput:.1f} "
            f"| {_ms(latency['p50'])} | {_ms(latency['p99'])} | {_client_errors(row.report)} |"
        )
    return lines


def _in_process_section(result: InProcessResult) -> list[str]:
    lines = [
        "## In-process model cost",
        "",
        f"{result.model_summary}, loaded through `ML.model_store.ModelStore` as the server "
        "loads it, timed in this process with one numeric thread: `pipeline.predict(DataFrame)` "
        "on iris rows, median of repeated timeit runs. CompiledPipeline: "
        f"{result.fast_note}.",
        "",
        "| rows | pipeline us/call | pipeline us/row | CompiledPipeline us/call "
        "| CompiledPipeline us/row |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        fast_call = "-" if row.fast_us is None else f"{row.fast_us:,.1f}"
        fast_row = "-" if row.fast_us is None else f"{row.fast_us / row.rows:,.2f}"
        lines.append(
            f"| {row.rows} | {row.pipeline_us:,.1f} | {row.pipeline_us / row.rows:,.2f} "
            f"| {fast_call} | {fast_row} |"
        )
    return lines


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _flag(result: WrkResult) -> str:
    return f"**{result.describe_errors()}**" if result.has_errors else "none"


def _client_errors(report: LoadReport) -> str:
    failed = {status: n for status, n in report.statuses.items() if not 200 <= status < 300}
    parts = [f"status {status}: {n}" for status, n in sorted(failed.items())]
    parts += [f"{kind}: {n}" for kind, n in sorted(report.client_errors.items())]
    return f"**{', '.join(parts)}**" if parts else "none"


# -- main -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    duration: int
    pairs: int
    workers: int
    out: Path
    quick: bool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark fastml's predict route against the bare HTTP stack (wrk, "
        "alternating pairs), run our own load client, time the model in-process, and write "
        "a markdown report. Exit code 0 when all requests succeeded, 1 when some failed, "
        "2 when the benchmark could not start, 130 when interrupted.",
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per pass (10)")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per concurrency (3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="report file (docs/benchmarks.md)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s passes, 1 pair (unless given)"
    )
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    duration = args.duration if args.duration is not None else (2 if args.quick else 10)
    pairs = args.pairs if args.pairs is not None else (1 if args.quick else 3)
    for name, value in (("--duration", duration), ("--pairs", pairs), ("--workers", args.workers)):
        if value < 1:
            raise BenchmarkError(f"{name} must be at least 1; got {value}")
    return Options(duration, pairs, args.workers, args.out, args.quick)


def wrk_version(wrk: str) -> str:
    completed = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (completed.stdout + completed.stderr).strip().splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk"


def passed_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith("FASTML_") and key not in OWNED_ENV
    }


def run_benchmark(options: Options, command: str) -> tuple[str, bool]:
    """Everything but writing the file: (the report, whether every request succeeded)."""
    wrk = ensure_wrk()
    info = RunInfo(
        started=datetime.datetime.now(datetime.UTC),
        command=command,
        duration=options.duration,
        pairs=options.pairs,
        workers=options.workers,
        wrk_version=wrk_version(wrk),
        load_average=os.getloadavg(),
        passed_env=passed_env(),
    )
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastml-bench-")))
        model_dir = work_dir / "models"
        fastml = start_gunicorn(
            "fastml",
            FASTML_APP,
            work_dir,
            options.workers,
            {
                "FASTML_MODEL_DIR": str(model_dir),
                "FASTML_LOG_PATH": str(work_dir / "ML_server.log"),
                "SERVICE_USER": USER,
                "SERVICE_PASS": PASSWORD,
            },
        )
        stack.callback(stop_gunicorn, fastml)
        print(f"fastml ready at {fastml.url}; training {MODEL}", file=sys.stderr)
        train_model(fastml)
        warm_up(fastml)
        ceiling = start_gunicorn("ceiling", CEILING_APP, work_dir, options.workers, {})
        stack.callback(stop_gunicorn, ceiling)
        warm_up(ceiling)
        print(f"ceiling ready at {ceiling.url}", file=sys.stderr)

        script_path = work_dir / "post.lua"
        script_path.write_text(
            wrk_script(
                PREDICT_BODY,
                {"Content-Type": "application/json", "Authorization": basic_auth_header()},
            )
        )
        path = f"/models/{MODEL}/predict"
        summaries = {
            concurrency: run_pairs(
                wrk,
                fastml.url + path,
                ceiling.url + path,
                script_path,
                concurrency,
                options.duration,
                options.pairs,
            )
            for concurrency in CONCURRENCIES
        }
        own_client = [
            OwnClientRow(
                target,
                run_own_client(
                    server.url,
                    OWN_CLIENT_MAX_REQUESTS,
                    OWN_CLIENT_CONCURRENCY,
                    float(options.duration),
                ),
            )
            for target, server in (("predict", fastml), ("ceiling", ceiling))
        ]
        print("timing the model in-process", file=sys.stderr)
        in_process = measure_in_process(model_dir, repeats=3 if options.quick else 7)
    is_success = not any(s.has_errors for s in summaries.values()) and all(
        row.report.is_success for row in own_client
    )
    return format_report(info, summaries, own_client, in_process), is_success


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "testing/benchmark.py", *given])
    try:
        options = options_from_args(args)
        check_out_path(options.out)
        with sigterm_as_interrupt():
            report, is_success = run_benchmark(options, command)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; both servers were stopped", file=sys.stderr)
        return 130
    print(report)
    write_report(options.out, report)
    print(f"report written to {options.out}", file=sys.stderr)
    if not is_success:
        print("some requests failed: see the errors in the report", file=sys.stderr)
    return 0 if is_success else 1


if __name__ == "__main__":
    sys.exit(main())
