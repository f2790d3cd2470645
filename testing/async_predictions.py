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
import contextlib
import csv
import errno
import importlib.util
import io
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

if __package__ in (None, ""):
    # Run as `python testing/async_predictions.py`, like the fast-ml original: make the
    # project root importable so `testing.load_report` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testing.fastml_api import basic_auth_header, multipart_body
from testing.http_connection import (
    AnswerIncomplete,
    BadAnswer,
    KeepAliveConnection,
    Target,
    encode_request,
)
from testing.load_config import (
    DEFAULT_CSV,
    LoadConfig,
    LoadTestError,
    Payload,
    check_loopback,
)
from testing.load_credentials import auth_note
from testing.load_report import LatencyHistogram, LoadReport, save_json, save_plot

# Rows kept for --payload json, sent round-robin: bounds memory for a huge CSV.
MAX_JSON_ROWS = 10_000
# In --rate mode a request that starts later than this after its scheduled time is "late".
LATE_AFTER_SECONDS = 0.001
PROGRESS_INTERVAL_SECONDS = 0.2


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
    fields = {}
    if config.payload is Payload.COMPAT:
        if config.target not in header:
            raise LoadTestError(
                f"target column {config.target!r} not found in {config.csv_path}; the CSV has: "
                f"{', '.join(header)}; pass --target NAME"
            )
        fields["target_variable"] = config.target
    content_type, body = multipart_body(fields, {"csv_file": (config.csv_path.name, data)})
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


def error_kind(exc: BaseException) -> str:
    """A short name for a failed request: timeout, connection refused, disconnected, answer
    cut (the connection closed in the middle of an answer), bad answer, or a class name."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, AnswerIncomplete):
        return "answer cut"
    if isinstance(exc, BadAnswer):
        return "bad answer"
    if isinstance(exc, ConnectionError):  # reset, broken pipe, closed before the answer
        return "disconnected"
    if getattr(exc, "errno", None) in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "disconnected"
    return type(exc).__name__


class _LoadRun:
    """The shared state of the worker pool; the hot loops cache attributes in locals."""

    def __init__(self, config: LoadConfig, prepared: PreparedRequests) -> None:
        self.config = config
        self.url = config.endpoint
        self.target = Target.from_url(self.url)
        # Every request's bytes, head and body, encoded once before the first is sent.
        headers = {
            "Authorization": basic_auth_header(
                config.credentials.user, config.credentials.password
            ),
            "Content-Type": prepared.content_type,
        }
        self.requests = tuple(encode_request(self.url, headers, body) for body in prepared.bodies)
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

    async def send(self, connection: KeepAliveConnection, request: bytes, since: float) -> None:
        """One request; its latency is counted from `since` (the scheduled time in --rate mode)."""
        self.sent += 1
        try:
            status = await connection.exchange(request)
        except (OSError, AnswerIncomplete, BadAnswer) as exc:  # TimeoutError is an OSError
            kind = error_kind(exc)
            self.errors[kind] = self.errors.get(kind, 0) + 1
        else:
            self.histogram.record(time.perf_counter() - since)
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self.done += 1

    def connection(self) -> KeepAliveConnection:
        """Each worker's own connection: a worker has at most one request in flight."""
        return KeepAliveConnection(self.target, self.config.timeout)

    async def closed_loop_worker(self) -> None:
        with contextlib.closing(self.connection()) as connection:
            await self._closed_loop(connection)

    async def _closed_loop(self, connection: KeepAliveConnection) -> None:
        requests, count, limit = self.requests, len(self.requests), self.config.requests
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
            await send(connection, requests[index % count], started)

    async def open_loop_worker(self, rate: float) -> None:
        with contextlib.closing(self.connection()) as connection:
            await self._open_loop(connection, rate)

    async def _open_loop(self, connection: KeepAliveConnection, rate: float) -> None:
        requests, count, limit = self.requests, len(self.requests), self.config.requests
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
            # A late request counts from its schedule (no coordinated omission); the event
            # loop may also wake a little early, and then it counts from when it was sent,
            # so a latency is never negative: the earlier of the two.
            await send(connection, requests[index % count], min(scheduled, clock()))

    def report(self, wall_seconds: float) -> LoadReport:
        report = LoadReport(
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
        note = auth_note(report, self.config.credentials)
        if note is not None:
            report.notes.append(note)
        return report


async def run_load(
    config: LoadConfig,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Run one load test. Setting `stop` ends it early: no new requests, in-flight ones finish.

    `on_progress(done)` is called every PROGRESS_INTERVAL_SECONDS (never per request).

    Raises LoadTestError (or RemoteTargetRefused) before any connection when it cannot start.
    """
    if not config.allow_remote:
        await check_loopback(config.url)
    prepared = prepare_requests(config)
    run = _LoadRun(config, prepared)
    run.start = time.perf_counter()
    run.deadline = run.start + config.duration if config.duration else math.inf
    async with asyncio.TaskGroup() as group:
        helpers = [group.create_task(_stop_on(stop, run))] if stop is not None else []
        if config.show_progress:
            helpers.append(group.create_task(_show_progress(run)))
        if on_progress is not None:
            helpers.append(group.create_task(_report_progress(run, on_progress)))
        workers = [
            group.create_task(
                run.open_loop_worker(config.rate) if config.rate else run.closed_loop_worker()
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


async def _report_progress(run: _LoadRun, on_progress: Callable[[int], None]) -> None:
    try:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
            on_progress(run.done)
    finally:
        on_progress(run.done)


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
    parser.add_argument(
        "--url",
        default=os.environ.get("FASTML_URL", "http://127.0.0.1:8000"),
        help="server base URL (default $FASTML_URL, else http://127.0.0.1:8000)",
    )
    parser.add_argument("--model", default="iris", help="model name (default iris)")
    parser.add_argument(
        "--user",
        default=None,
        help="user (default $FASTML_USER, else $SERVICE_USER, else the server's generated admin)",
    )
    parser.add_argument(
        "--password",
        default=None,
        help="password (default $FASTML_PASSWORD, else $SERVICE_PASS, else the generated "
        "admin's, read from ML/saved_models/_state/admin_credentials.txt or the FASTML_STATE_DIR "
        "/ FASTML_MODEL_DIR of the environment)",
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
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="client processes sharing the requests and the concurrency, so one Python "
        "process is not the limit; one merged report (default 1)",
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
        user=args.user,
        password=args.password,
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
        raise LoadTestError(
            f"--plot needs matplotlib: run `{sys.executable} -m pip install matplotlib`, "
            "or drop --plot"
        )


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


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
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
            f"({config.payload}, concurrency {config.concurrency}, "
            f"{args.processes} process(es), as user {config.credentials.user!r} from "
            f"{config.credentials.source})",
            file=sys.stderr,
        )
        if args.processes != 1:
            from testing.load_processes import run_in_processes

            report = run_in_processes(config, args.processes)
        else:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
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
