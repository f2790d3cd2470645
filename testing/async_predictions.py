"""Load-test client: fires N prediction requests at a fastml server, reports speed and latency.

    python testing/async_predictions.py 1000
    python testing/async_predictions.py 1000000 --concurrency 128 --json out.json --plot out.png
    python testing/async_predictions.py 60000 --rate 1000 --payload compat

Memory stays constant whatever N: a fixed pool of `concurrency` workers pulls request numbers
from a shared counter, and latencies go into a fixed-size histogram.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import enum
import errno
import importlib.util
import io
import ipaddress
import math
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import yarl

if __package__ in (None, ""):
    # Run as `python testing/async_predictions.py`, like the fast-ml original: make the
    # project root importable so `testing.load_report` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testing.load_report import LatencyHistogram, LoadReport, save_json, save_plot

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CSV = PROJECT_DIR / "ML" / "data" / "test.csv"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Rows kept for --payload json, sent round-robin: bounds memory for a huge CSV.
MAX_JSON_ROWS = 10_000
# In --rate mode a request that starts later than this after its scheduled time is "late".
LATE_AFTER_SECONDS = 0.001
PROGRESS_INTERVAL_SECONDS = 0.2


class Payload(enum.StrEnum):
    JSON = "json"
    CSV = "csv"
    COMPAT = "compat"


class LoadTestError(Exception):
    """A load test that cannot start: a bad option, an unreadable CSV, a refused target."""


class RemoteTargetRefused(LoadTestError):
    """The target host is not a loopback address and remote targets were not allowed."""


def _env_first(*names: str, default: str) -> str:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return default


def default_user() -> str:
    return _env_first("FASTML_USER", "SERVICE_USER", default="admin")


def default_password() -> str:
    return _env_first("FASTML_PASSWORD", "SERVICE_PASS", default="password")


@dataclass(frozen=True)
class LoadConfig:
    """Everything one load test needs; validated when built."""

    requests: int = 1000
    url: str = "http://127.0.0.1:8000"
    model: str = "iris"
    user: str = field(default_factory=default_user)
    password: str = field(default_factory=default_password, repr=False)
    concurrency: int = 64
    duration: float | None = None
    payload: Payload = Payload.JSON
    csv_path: Path = DEFAULT_CSV
    target: str = "species"
    rate: float | None = None
    timeout: float = 30.0
    show_progress: bool = True
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise LoadTestError(f"the number of requests must be at least 1; got {self.requests}")
        if ":" in self.user:
            raise LoadTestError(f"user name {self.user!r} contains ':', which basic auth forbids")
        if self.concurrency < 1:
            raise LoadTestError(f"--concurrency must be at least 1; got {self.concurrency}")
        for name in ("duration", "rate", "timeout"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise LoadTestError(f"--{name} must be a positive number; got {value}")
        if not MODEL_NAME.match(self.model):
            raise LoadTestError(
                f"model name {self.model!r} is not valid; use lowercase letters, digits, "
                "'_' and '-', starting with a letter or digit, at most 64 characters"
            )
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoadTestError(f"--url must look like http://127.0.0.1:8000; got {self.url!r}")

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        if self.payload is Payload.COMPAT:
            return f"{base}/get_prediction"
        if self.payload is Payload.CSV:
            return f"{base}/models/{self.model}/predict/csv"
        return f"{base}/models/{self.model}/predict"


async def check_loopback(url: str) -> None:
    """Refuse a URL whose host resolves to any non-loopback address (no connection is made)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise LoadTestError(f"--url {url!r} has an invalid port: {exc}") from exc
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=0, proto=0)
    except OSError as exc:
        raise RemoteTargetRefused(
            f"cannot resolve host {host!r} of --url {url} ({exc}); check the URL"
        ) from exc
    remote = sorted({str(info[4][0]) for info in infos if not _is_loopback(str(info[4][0]))})
    if remote or not infos:
        raise RemoteTargetRefused(
            f"refusing to load-test {url}: host {host!r} resolves to non-loopback "
            f"address {', '.join(remote) or '(none)'}; a load test can take a shared server "
            "down, so pass --allow-remote if this target is yours to test"
        )


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@dataclass(frozen=True)
class PreparedRequests:
    """Request bodies built once, before the first request is sent."""

    content_type: str
    bodies: tuple[bytes, ...]


def prepare_requests(config: LoadConfig) -> PreparedRequests:
    try:
        data = config.csv_path.read_bytes()
    except OSError as exc:
        raise LoadTestError(
            f"cannot read the CSV file {str(config.csv_path)!r} ({exc.strerror}); "
            "pass an existing file with --csv PATH"
        ) from exc
    header = _csv_header(data, config.csv_path)
    if config.payload is Payload.JSON:
        return PreparedRequests("application/json", _json_bodies(data, config))
    fields: list[tuple[str, bytes, str | None]] = [("csv_file", data, config.csv_path.name)]
    if config.payload is Payload.COMPAT:
        if config.target not in header:
            raise LoadTestError(
                f"target column {config.target!r} not found in {config.csv_path}; the CSV has: "
                f"{', '.join(header)}; pass --target NAME"
            )
        fields.append(("target_variable", config.target.encode(), None))
    content_type, body = _multipart(fields)
    return PreparedRequests(content_type, (body,))


def _csv_text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadTestError(f"{path} is not UTF-8 text ({exc}); save the CSV as UTF-8") from exc


def _csv_header(data: bytes, path: Path) -> list[str]:
    header = next(csv.reader(io.StringIO(_csv_text(data, path))), None)
    if not header:
        raise LoadTestError(f"{path} is empty; it needs a header line and data rows")
    return header


def _json_bodies(data: bytes, config: LoadConfig) -> tuple[bytes, ...]:
    reader = csv.DictReader(io.StringIO(_csv_text(data, config.csv_path), newline=""))
    bodies = []
    for record in reader:
        row = {k: _cell_value(v) for k, v in record.items() if k != config.target and k is not None}
        bodies.append(orjson.dumps({"rows": [row]}))
        if len(bodies) >= MAX_JSON_ROWS:
            break
    if not bodies:
        raise LoadTestError(f"{config.csv_path} has no data rows; add rows under the header")
    return tuple(bodies)


def _cell_value(text: str | None) -> int | float | str | None:
    """A CSV cell as the JSON value a server expects: numbers as numbers, empty as null."""
    if text is None or text == "":
        return None
    for number in (int, float):
        with contextlib.suppress(ValueError):
            return number(text)
    return text


def _multipart(fields: Sequence[tuple[str, bytes, str | None]]) -> tuple[str, bytes]:
    """A multipart/form-data body built once: aiohttp's FormData can be sent only once."""
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in value for _, value, _ in fields):
        boundary = secrets.token_hex(16)
    parts = []
    for name, value, filename in fields:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if filename is not None:
            safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            head += f'; filename="{safe_name}"\r\nContent-Type: text/csv'
        parts.append(head.encode() + b"\r\n\r\n" + value + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def basic_auth_header(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def error_kind(exc: BaseException) -> str:
    """A short name for a failed request: timeout, connection refused, disconnected, or a class."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError) or isinstance(
        os_error, ConnectionResetError | BrokenPipeError | ConnectionAbortedError
    ):
        return "disconnected"
    if getattr(os_error, "errno", None) in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "disconnected"
    return type(exc).__name__


class _LoadRun:
    """The shared state of the worker pool; the hot loops cache attributes in locals."""

    def __init__(self, config: LoadConfig, prepared: PreparedRequests) -> None:
        self.config = config
        self.url = config.endpoint
        # Parsed once, not by aiohttp on every request.
        self._url = yarl.URL(self.url)
        self.bodies = prepared.bodies
        self.next_index = 0
        self.sent = 0
        self.done = 0
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.late = 0
        self.histogram = LatencyHistogram()
        self.stop_reason = "completed"
        self.is_stopping = False
        self.start = 0.0
        self.deadline = math.inf

    def stop(self, reason: str) -> None:
        if not self.is_stopping:
            self.is_stopping = True
            self.stop_reason = reason

    async def send(self, session: aiohttp.ClientSession, body: bytes, since: float) -> None:
        """One request; its latency is counted from `since` (the scheduled time in --rate mode)."""
        self.sent += 1
        try:
            async with session.post(self._url, data=body) as response:
                # Read the body so the connection goes back to the pool; no parsing.
                await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            kind = error_kind(exc)
            self.errors[kind] = self.errors.get(kind, 0) + 1
        else:
            self.histogram.record(time.perf_counter() - since)
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self.done += 1

    async def closed_loop_worker(self, session: aiohttp.ClientSession) -> None:
        bodies, count, limit = self.bodies, len(self.bodies), self.config.requests
        deadline, clock, send = self.deadline, time.perf_counter, self.send
        while not self.is_stopping:
            index = self.next_index
            if index >= limit:
                return
            started = clock()
            if started >= deadline:
                self.stop("duration")
                return
            self.next_index = index + 1
            await send(session, bodies[index % count], started)

    async def open_loop_worker(self, session: aiohttp.ClientSession, rate: float) -> None:
        bodies, count, limit = self.bodies, len(self.bodies), self.config.requests
        deadline, clock, send, start = self.deadline, time.perf_counter, self.send, self.start
        while not self.is_stopping:
            index = self.next_index
            if index >= limit:
                return
            scheduled = start + index / rate
            if scheduled >= deadline:
                self.stop("duration")
                return
            self.next_index = index + 1
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                if self.is_stopping:
                    return
            elif -delay > LATE_AFTER_SECONDS:
                # Every worker was busy at the scheduled time: the in-flight cap was hit.
                self.late += 1
            # The loop may wake a sleeper a hair early: never count from before the real start.
            await send(session, bodies[index % count], min(scheduled, clock()))

    def report(self, wall_seconds: float) -> LoadReport:
        return LoadReport(
            url=self.url,
            payload=str(self.config.payload),
            concurrency=self.config.concurrency,
            requests_planned=self.config.requests,
            requests_sent=self.sent,
            statuses=dict(self.statuses),
            client_errors=dict(self.errors),
            wall_seconds=wall_seconds,
            rate=self.config.rate,
            late=self.late,
            stop_reason=self.stop_reason,
            latency=self.histogram,
        )


async def run_load(config: LoadConfig, *, stop: asyncio.Event | None = None) -> LoadReport:
    """Run one load test. Setting `stop` ends it early: no new requests, in-flight ones finish.

    Raises LoadTestError (or RemoteTargetRefused) before any connection when it cannot start.
    """
    if not config.allow_remote:
        await check_loopback(config.url)
    prepared = prepare_requests(config)
    run = _LoadRun(config, prepared)
    # Every request shares these headers, so aiohttp does not rebuild them per request.
    headers = {
        "Authorization": basic_auth_header(config.user, config.password),
        "Content-Type": prepared.content_type,
    }
    connector = aiohttp.TCPConnector(limit=config.concurrency)
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    # No cookie jar: a load test sends the same request every time and keeps no state.
    async with aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        run.start = time.perf_counter()
        run.deadline = run.start + config.duration if config.duration else math.inf
        async with asyncio.TaskGroup() as group:
            helpers = [group.create_task(_stop_on(stop, run))] if stop is not None else []
            if config.show_progress:
                helpers.append(group.create_task(_show_progress(run)))
            workers = [
                group.create_task(
                    run.open_loop_worker(session, config.rate)
                    if config.rate
                    else run.closed_loop_worker(session)
                )
                for _ in range(min(config.concurrency, config.requests))
            ]
            await asyncio.gather(*workers)
            wall_seconds = time.perf_counter() - run.start
            for helper in helpers:
                helper.cancel()
    return run.report(wall_seconds)


async def _stop_on(event: asyncio.Event, run: _LoadRun) -> None:
    await event.wait()
    run.stop("interrupted")


async def _show_progress(run: _LoadRun) -> None:
    """A tqdm bar refreshed every PROGRESS_INTERVAL_SECONDS, never per request."""
    from tqdm import tqdm

    with tqdm(total=run.config.requests, unit="req", smoothing=0.1, dynamic_ncols=True) as bar:
        shown = 0
        try:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
                done = run.done
                bar.update(done - shown)
                shown = done
                failed = sum(n for s, n in run.statuses.items() if not 200 <= s < 300)
                if failed or run.errors:
                    bar.set_postfix(non_2xx=failed, errors=sum(run.errors.values()), refresh=False)
        finally:
            bar.update(run.done - shown)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fire N prediction requests at a fastml server and report throughput "
        "and latency percentiles. Exit code 0 when every answer was 2xx, 1 otherwise, "
        "2 when the test could not start, 130 when stopped by Ctrl-C (after the report).",
    )
    parser.add_argument(
        "requests",
        nargs="?",
        type=int,
        default=1000,
        metavar="N",
        help="number of requests, up to 1,000,000 and more (default 1000)",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--model", default="iris", help="model name (default iris)")
    parser.add_argument(
        "--user", default=None, help="user (default $FASTML_USER, else $SERVICE_USER, else admin)"
    )
    parser.add_argument(
        "--password",
        default=None,
        help="password (default $FASTML_PASSWORD, else $SERVICE_PASS, else password)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="requests in flight at most (default 64)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop sending after this many seconds"
    )
    parser.add_argument(
        "--payload",
        choices=[p.value for p in Payload],
        default="json",
        help="json: one row per request; csv: the whole CSV to /predict/csv; "
        "compat: the fast-ml /get_prediction call (default json)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=DEFAULT_CSV,
        help="CSV the rows or the upload come from (default ML/data/test.csv)",
    )
    parser.add_argument(
        "--target",
        default="species",
        help="label column: dropped from JSON rows, sent with compat (default species)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: start request i at i/RATE seconds whatever the answers, "
        "latency counted from that schedule",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default 30)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="also write a latency histogram PNG here (needs matplotlib)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a target that is not a loopback address"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(
        requests=args.requests,
        url=args.url,
        model=args.model,
        user=args.user if args.user is not None else default_user(),
        password=args.password if args.password is not None else default_password(),
        concurrency=args.concurrency,
        duration=args.duration,
        payload=Payload(args.payload),
        csv_path=args.csv,
        target=args.target,
        rate=args.rate,
        timeout=args.timeout,
        show_progress=not args.no_progress,
        allow_remote=args.allow_remote,
    )


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before the run, not after a million requests, when an output cannot be written."""
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None and not path.resolve().parent.is_dir():
            raise LoadTestError(f"{option}: folder {str(path.parent)!r} does not exist; create it")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise LoadTestError("--plot needs matplotlib; run `pip install matplotlib` or drop --plot")


async def _run_until_interrupted(config: LoadConfig) -> LoadReport:
    """First Ctrl-C: stop sending and report; a second one aborts at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_sigint() -> None:
        print(
            "\ninterrupted: waiting for requests in flight (Ctrl-C again to abort)", file=sys.stderr
        )
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    # Not on Windows, nor outside the main thread: Ctrl-C then aborts without a report.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    return await run_load(config, stop=stop)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's faster event loop when it is installed; asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        _check_outputs(args)
        print(
            f"sending {config.requests} requests to POST {config.endpoint} "
            f"({config.payload}, concurrency {config.concurrency})",
            file=sys.stderr,
        )
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            report = runner.run(_run_until_interrupted(config))
    except LoadTestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format_text())
    if args.json is not None:
        save_json(report, args.json)
        print(f"report written to {args.json}")
    if args.plot is not None:
        save_plot(report, args.plot)
        print(f"latency histogram written to {args.plot}")
    if report.stop_reason == "interrupted":
        return 130  # the shell's code for a run ended by Ctrl-C
    return 0 if report.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
