"""One-run benchmark: fastml's predict route against the bare HTTP stack, and the model in-process.

    python testing/benchmark.py [--duration 10] [--pairs 3] [--workers 2]
                                [--out docs/benchmarks.md] [--quick]
    python testing/benchmark.py --estimators all [--duration 3] [--pairs 2]
    python testing/benchmark.py --workload get_prediction [--reference DIR] [--pairs 3] ...
    python testing/benchmark.py --through-nginx [--duration 10] [--pairs 3] [--workers 2]

On one machine, in one run: starts fastml with the Dockerfile's CMD (gunicorn, Uvicorn workers,
a fresh temp model dir), trains `iris`, starts testing/ceiling_app.py under the same command,
then for each concurrency runs wrk against the predict route and against the ceiling in
alternating pairs (testing/ceiling_pairs.py). It also runs our own load client and times the
trained model's `predict` in-process (testing/in_process_timing.py), then writes a markdown
report (testing/benchmark_report.py), keeping the notes below the marker line of an existing
report. Needs wrk on PATH (`apt-get install wrk`).

With --estimators (`all`, or names from ML/estimators.py separated by commas) it measures
instead single-row predict at c=64 for each estimator beside a naive FastAPI route and the
ceiling (testing/estimators_benchmark.py), and rewrites that section of the report only.

`--workload get_prediction` measures the fast-ml workload instead (testing/compat_benchmark.py):
the original client's multipart test.csv to `/get_prediction` at c=64, beside the ceiling and,
with `--reference DIR`, another checkout of fastml (the code before a change), in rounds of one
pass each; it prints a markdown section (written to `--out` only when given).

`--through-nginx` measures the predict route through nginx in front of two gunicorn replicas
beside one server alone, in alternating pairs at c=16 and c=64 (testing/balancer_benchmark.py),
and rewrites that section of the report only.

Exit code: 0 when every request was answered 2xx, 1 when some pass had errors (the report is
still written), 2 when the benchmark could not start, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):
    # Run as `python testing/benchmark.py`: make the project root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testing.async_predictions import run_load
from testing.balancer_benchmark import BalancerBenchmarkError, run_balancer_benchmark
from testing.balancer_benchmark import write_section as write_nginx_section
from testing.benchmark_report import (
    CEILING_APP,
    OwnClientRow,
    ReportPathError,
    RunInfo,
    check_out_path,
    format_report,
    write_report,
)
from testing.benchmark_workload import (
    CONCURRENCIES,
    MODEL,
    OWN_CLIENT_CONCURRENCY,
    OWN_CLIENT_MAX_REQUESTS,
    PREDICT_BODY,
    TARGET,
    TEST_CSV,
    WARMUP_REQUESTS,
    train_workload_model,
)
from testing.ceiling_pairs import run_pairs
from testing.compat_benchmark import CompatBenchmarkError, CompatOptions, run_compat_benchmark
from testing.estimators_benchmark import (
    DEFAULT_DURATION,
    DEFAULT_ROUNDS,
    NAIVE_APP,
    EstimatorsBenchmarkError,
    format_section,
    run_rounds,
    train_all,
    warm_up_routes,
    write_section,
    write_wrk_script,
)
from testing.estimators_benchmark import measure_in_process as measure_estimators_in_process
from testing.fastml_api import ApiError, basic_auth_header
from testing.in_process_timing import measure_in_process
from testing.load_config import LoadConfig, LoadTestError, Payload
from testing.load_report import LoadReport
from testing.servers import (
    ADMIN,
    OWNED_ENV,
    PROJECT_DIR,
    Server,
    ServerError,
    start_server,
    stop_server,
)
from testing.wrk import WrkError, find_wrk, wrk_script, wrk_version

DEFAULT_OUT = PROJECT_DIR / "docs" / "benchmarks.md"


class BenchmarkError(Exception):
    """The benchmark cannot go on: a server that does not start, a failed job, a bad option."""


def train_model(server: Server) -> None:
    """Train `iris` from ML/data/train.csv and wait for the job to succeed."""
    try:
        train_workload_model(server.url)
    except ApiError as exc:
        raise BenchmarkError(f"{exc}; see {server.output_path}") from exc


def load_config(
    base_url: str, requests: int, concurrency: int, duration: float | None
) -> LoadConfig:
    return LoadConfig(
        requests=requests,
        url=base_url,
        model=MODEL,
        user=ADMIN[0],
        password=ADMIN[1],
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


def warm_up(server: Server) -> None:
    report = run_own_client(server.url, WARMUP_REQUESTS, 8, None)
    if not report.is_success:
        raise BenchmarkError(
            f"warm-up requests to the {server.name} server failed: statuses {report.statuses}, "
            f"client errors {report.client_errors}; see {server.output_path}"
        )


class Workload(StrEnum):
    PREDICT = "predict"
    GET_PREDICTION = "get_prediction"


@dataclass(frozen=True)
class Options:
    duration: int
    pairs: int
    workers: int
    out: Path
    quick: bool
    estimators: tuple[str, ...] = ()
    workload: Workload = Workload.PREDICT
    reference: Path | None = None
    is_out_given: bool = False
    through_nginx: bool = False


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
    parser.add_argument(
        "--estimators",
        default=None,
        help="`all` or estimator names separated by commas: measure each beside a naive "
        f"FastAPI route at c=64 instead ({DEFAULT_DURATION} s passes, {DEFAULT_ROUNDS} rounds "
        "unless given)",
    )
    parser.add_argument(
        "--workload",
        choices=[workload.value for workload in Workload],
        default=Workload.PREDICT.value,
        help="predict: one JSON row to /models/iris/predict (default); get_prediction: the "
        "fast-ml client's multipart test.csv to /get_prediction at c=64, --pairs rounds",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="get_prediction only: a checkout of other fastml code (e.g. `git archive main`) "
        "served and measured beside this one",
    )
    parser.add_argument(
        "--through-nginx",
        action="store_true",
        help="the predict route through nginx in front of 2 replicas beside one server alone "
        "(pairs at c=16 and c=64); rewrites that section of --out only",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    estimators = estimator_names(args.estimators)
    default_duration, default_pairs = (DEFAULT_DURATION, DEFAULT_ROUNDS) if estimators else (10, 3)
    duration = (
        args.duration if args.duration is not None else (2 if args.quick else default_duration)
    )
    pairs = args.pairs if args.pairs is not None else (1 if args.quick else default_pairs)
    for name, value in (("--duration", duration), ("--pairs", pairs), ("--workers", args.workers)):
        if value < 1:
            raise BenchmarkError(f"{name} must be at least 1; got {value}")
    workload = Workload(args.workload)
    reference = args.reference.resolve() if args.reference is not None else None
    if reference is not None:
        if workload is not Workload.GET_PREDICTION:
            raise BenchmarkError("--reference goes with --workload get_prediction")
        if not (reference / "wsgi.py").is_file():
            raise BenchmarkError(f"--reference {reference} is not a fastml checkout (no wsgi.py)")
    is_out_given = args.out != DEFAULT_OUT
    if estimators and workload is not Workload.PREDICT:
        raise BenchmarkError("--estimators and --workload get_prediction are separate runs")
    if args.through_nginx and (estimators or workload is not Workload.PREDICT):
        raise BenchmarkError("--through-nginx is a run of its own (the predict workload)")
    return Options(
        duration,
        pairs,
        args.workers,
        args.out,
        args.quick,
        estimators=estimators,
        workload=workload,
        reference=reference,
        is_out_given=is_out_given,
        through_nginx=args.through_nginx,
    )


def estimator_names(text: str | None) -> tuple[str, ...]:
    """() without --estimators; every registry name for `all`; else the names given, checked."""
    from ML.estimators import ESTIMATORS

    if text is None:
        return ()
    if text.strip() == "all":
        return tuple(ESTIMATORS)
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ESTIMATORS]
    if unknown or not names:
        raise BenchmarkError(
            f"--estimators takes `all` or names from: {', '.join(ESTIMATORS)}; got {text!r}"
        )
    return names


def passed_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith("FASTML_") and key not in OWNED_ENV
    }


def run_benchmark(options: Options, command: str) -> tuple[str, bool]:
    """Everything but writing the file: (the report, whether every request succeeded)."""
    wrk = find_wrk()
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
        fastml = start_server(work_dir, workers=options.workers)
        stack.callback(stop_server, fastml)
        print(f"fastml ready at {fastml.url}; training {MODEL}", file=sys.stderr)
        train_model(fastml)
        warm_up(fastml)
        ceiling = start_server(
            work_dir, app=CEILING_APP, name="ceiling", workers=options.workers, admin=None
        )
        stack.callback(stop_server, ceiling)
        warm_up(ceiling)
        print(f"ceiling ready at {ceiling.url}", file=sys.stderr)

        script_path = work_dir / "post.lua"
        script_path.write_text(
            wrk_script(
                PREDICT_BODY,
                {"Content-Type": "application/json", "Authorization": basic_auth_header(*ADMIN)},
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
        in_process = measure_in_process(fastml.model_dir, repeats=3 if options.quick else 7)
    is_success = not any(s.has_errors for s in summaries.values()) and all(
        row.report.is_success for row in own_client
    )
    return format_report(info, summaries, own_client, in_process), is_success


def run_estimators_benchmark(options: Options, command: str) -> tuple[str, bool]:
    """Every estimator at c=64 beside the naive route and the ceiling: (the section, success)."""
    wrk = find_wrk()
    started = datetime.datetime.now(datetime.UTC)
    load_average = os.getloadavg()
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastml-bench-")))
        fastml = start_server(work_dir, workers=options.workers)
        stack.callback(stop_server, fastml)
        train_all(fastml, options.estimators)
        naive = start_server(
            work_dir, app=NAIVE_APP, name="naive", workers=options.workers, admin=None
        )
        stack.callback(stop_server, naive)
        ceiling = start_server(
            work_dir, app=CEILING_APP, name="ceiling", workers=options.workers, admin=None
        )
        stack.callback(stop_server, ceiling)
        warm_up_routes((fastml, naive, ceiling), options.estimators)
        measured = run_rounds(
            wrk,
            (fastml, naive, ceiling),
            options.estimators,
            write_wrk_script(work_dir),
            options.duration,
            options.pairs,
        )
        print("timing the models in-process", file=sys.stderr)
        costs = measure_estimators_in_process(fastml.model_dir, options.estimators)
    section = format_section(
        command, started, options.duration, options.workers, measured, costs, load_average
    )
    is_success = not any(r.has_errors for rounds in measured.values() for r in rounds)
    return section, is_success


def run_get_prediction(options: Options, command: str) -> int:
    """The fast-ml workload: print its markdown section, and write it to --out when given."""
    compat = CompatOptions(options.duration, options.pairs, options.workers, options.reference)
    report, is_success = run_compat_benchmark(compat, find_wrk(), command)
    print(report)
    if options.is_out_given:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(report, encoding="utf-8")
        print(f"report written to {options.out}", file=sys.stderr)
    if not is_success:
        print("some requests failed: see the errors in the report", file=sys.stderr)
    return 0 if is_success else 1


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
            if options.workload is Workload.GET_PREDICTION:
                return run_get_prediction(options, command)
            if options.through_nginx:
                report, is_success = run_balancer_benchmark(
                    find_wrk(), options.workers, options.duration, options.pairs, command
                )
            elif options.estimators:
                report, is_success = run_estimators_benchmark(options, command)
            else:
                report, is_success = run_benchmark(options, command)
    except (
        BenchmarkError,
        BalancerBenchmarkError,
        CompatBenchmarkError,
        EstimatorsBenchmarkError,
        ReportPathError,
        ServerError,
        WrkError,
        LoadTestError,
        ApiError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; both servers were stopped", file=sys.stderr)
        return 130
    print(report)
    if options.through_nginx:
        write_nginx_section(options.out, report)
    elif options.estimators:
        write_section(options.out, report)
    else:
        write_report(options.out, report)
    print(f"report written to {options.out}", file=sys.stderr)
    if not is_success:
        print("some requests failed: see the errors in the report", file=sys.stderr)
    return 0 if is_success else 1


if __name__ == "__main__":
    sys.exit(main())
