"""The fast-ml workload of testing/benchmark.py (`--workload get_prediction`): the original
client's call, a multipart ML/data/test.csv plus `target_variable` to `/get_prediction`, under wrk
at concurrency 64 beside the raw-ASGI ceiling and, when given, another checkout of fastml (the
code before a change), in rounds of one pass each; then our own client's `--payload compat`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testing.async_predictions import run_load
from testing.benchmark_report import CEILING_APP, git_revision, machine_description
from testing.benchmark_workload import TARGET, TEST_CSV, TRAIN_CSV
from testing.fastml_api import ApiError, LocalClient, basic_auth_header, multipart_body, train
from testing.load_config import LoadConfig, Payload
from testing.load_report import LoadReport
from testing.servers import ADMIN, Server, start_server, stop_server
from testing.wrk import WrkResult, run_wrk, wrk_script

COMPAT_MODEL = "default"  # the model /get_prediction evaluates
COMPAT_CONCURRENCY = 64
OWN_CLIENT_REQUESTS = 2_000
WARMUP_REQUESTS = 100
# The original fast-ml server answering its own client's 1,000 requests (issue 10): 4.3-5.0 s.
ORIGINAL_FAST_ML_REQUESTS_PER_SECOND = 210.0
FASTML, REFERENCE, CEILING = "fastml", "reference", "ceiling"


class CompatBenchmarkError(Exception):
    """A server that does not start or train, or failed warm-up requests."""


@dataclass(frozen=True)
class CompatOptions:
    duration: int
    rounds: int
    workers: int
    reference_dir: Path | None


def compat_request() -> tuple[str, bytes]:
    """The content type and body the original fast-ml client posts."""
    return multipart_body(
        {"target_variable": TARGET}, {"csv_file": (TEST_CSV.name, TEST_CSV.read_bytes())}
    )


def compat_load(server: Server, requests: int) -> LoadReport:
    config = LoadConfig(
        requests=requests,
        url=server.url,
        model=COMPAT_MODEL,
        user=ADMIN[0],
        password=ADMIN[1],
        concurrency=COMPAT_CONCURRENCY,
        payload=Payload.COMPAT,
        csv_path=TEST_CSV,
        target=TARGET,
        show_progress=False,
    )
    return asyncio.run(run_load(config))


def start_trained(work_dir: Path, name: str, workers: int, project_dir: Path | None) -> Server:
    """A fastml server (this checkout, or `project_dir`) with `default` trained on train.csv."""
    if project_dir is None:
        server = start_server(work_dir / name, name=name, workers=workers)
    else:
        server = start_server(work_dir / name, name=name, workers=workers, project_dir=project_dir)
    try:
        job = train(LocalClient(server.url, ADMIN), COMPAT_MODEL, TRAIN_CSV, TARGET)
        if job["status"] != "succeeded":
            raise CompatBenchmarkError(f"training on the {name} server failed: {job}")
        warm_up(server)
    except (ApiError, CompatBenchmarkError):
        stop_server(server)
        raise
    return server


def warm_up(server: Server) -> None:
    report = compat_load(server, WARMUP_REQUESTS)
    if not report.is_success:
        raise CompatBenchmarkError(
            f"warm-up requests to the {server.name} server failed: statuses {report.statuses}, "
            f"client errors {report.client_errors}; see {server.output_path}"
        )


def run_compat_benchmark(options: CompatOptions, wrk: str, command: str) -> tuple[str, bool]:
    """(the markdown report, whether every request was answered 2xx)."""
    started = datetime.datetime.now(datetime.UTC)
    load_average = os.getloadavg()
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastml-compat-")))
        servers = {FASTML: start_trained(work_dir, FASTML, options.workers, None)}
        stack.callback(stop_server, servers[FASTML])
        if options.reference_dir is not None:
            servers[REFERENCE] = start_trained(
                work_dir, REFERENCE, options.workers, options.reference_dir
            )
            stack.callback(stop_server, servers[REFERENCE])
        servers[CEILING] = start_server(
            work_dir / CEILING, app=CEILING_APP, name=CEILING, workers=options.workers, admin=None
        )
        stack.callback(stop_server, servers[CEILING])
        warm_up(servers[CEILING])
        content_type, body = compat_request()
        script_path = work_dir / "get_prediction.lua"
        script_path.write_text(
            wrk_script(
                body.decode("utf-8"),
                {"Content-Type": content_type, "Authorization": basic_auth_header(*ADMIN)},
            )
        )
        rounds = []
        for index in range(options.rounds):
            results = {
                name: run_wrk(
                    wrk,
                    server.url + "/get_prediction",
                    COMPAT_CONCURRENCY,
                    options.duration,
                    script_path,
                )
                for name, server in servers.items()
            }
            rounds.append(results)
            print(
                f"round {index + 1}/{options.rounds}: "
                + ", ".join(f"{n} {r.requests_per_second:.1f} req/s" for n, r in results.items()),
                file=sys.stderr,
            )
        own_client = {
            name: compat_load(server, OWN_CLIENT_REQUESTS)
            for name, server in servers.items()
            if name != CEILING
        }
    lines = [
        f"### `/get_prediction` (the fast-ml workload), {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`; commit `{git_revision()}`"
        + (
            f"; reference: {options.reference_dir} (commit `{_revision_of(options.reference_dir)}`)"
            if options.reference_dir is not None
            else ""
        )
        + f"; {machine_description()}; load average at start "
        f"{' / '.join(f'{x:.2f}' for x in load_average)}; {options.workers} workers per server.",
        "",
        f"Every server gets the same request: `POST /get_prediction`, multipart "
        f"`csv_file`=ML/data/{TEST_CSV.name} and `target_variable`={TARGET} ({len(body)} bytes), "
        f"basic auth, `default` trained from ML/data/{TRAIN_CSV.name}. wrk at c="
        f"{COMPAT_CONCURRENCY} for {options.duration} s per pass; each round runs one pass per "
        "server, one after the other, and each ratio divides by the ceiling pass of its round.",
        "",
        *_rounds_table(rounds),
        "",
        *_own_client_table(own_client),
    ]
    is_success = not any(r.has_errors for results in rounds for r in results.values()) and all(
        report.is_success for report in own_client.values()
    )
    return "\n".join(lines) + "\n", is_success


def _rounds_table(rounds: list[dict[str, WrkResult]]) -> list[str]:
    names = list(rounds[0])
    header = "| round | " + " | ".join(f"{n} req/s (p50 / p99 ms)" for n in names)
    ratio_names = [n for n in names if n != CEILING]
    header += " | " + " | ".join(f"{n} / ceiling" for n in ratio_names)
    header += f" | fastml / {ORIGINAL_FAST_ML_REQUESTS_PER_SECOND:.0f} req/s"
    if REFERENCE in names:
        header += " | fastml / reference"
    header += " | errors |"
    columns = header.count("|") - 1
    lines = [header, "|" + "---:|" * columns]
    for index, results in enumerate(rounds, start=1):
        cells = [str(index)]
        cells += [
            f"{r.requests_per_second:,.1f} ({r.p50_ms:.1f} / {r.p99_ms:.1f})"
            for r in results.values()
        ]
        cells += [f"{_ratio(results, n, CEILING):.3f}" for n in ratio_names]
        fastml = results[FASTML].requests_per_second
        cells.append(f"{fastml / ORIGINAL_FAST_ML_REQUESTS_PER_SECOND:.1f}x")
        if REFERENCE in names:
            cells.append(f"{_ratio(results, FASTML, REFERENCE):.1f}x")
        errors = [f"{n}: {r.describe_errors()}" for n, r in results.items() if r.has_errors]
        cells.append(", ".join(errors) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    medians = [
        f"{n} / ceiling median {statistics.median(_ratio(r, n, CEILING) for r in rounds):.3f}"
        for n in ratio_names
    ]
    fastml_rates = [r[FASTML].requests_per_second for r in rounds]
    lines += [
        "",
        f"Median of the rounds: {', '.join(medians)}; fastml "
        f"{statistics.median(fastml_rates):,.1f} req/s (rounds {min(fastml_rates):,.1f}-"
        f"{max(fastml_rates):,.1f}) = "
        f"{statistics.median(fastml_rates) / ORIGINAL_FAST_ML_REQUESTS_PER_SECOND:.1f}x the "
        f"original fast-ml server's {ORIGINAL_FAST_ML_REQUESTS_PER_SECOND:.0f} req/s.",
    ]
    return lines


def _own_client_table(reports: dict[str, LoadReport]) -> list[str]:
    lines = [
        f"Our own client, the same call: `python testing/async_predictions.py "
        f"{OWN_CLIENT_REQUESTS} --payload compat --concurrency {COMPAT_CONCURRENCY} --url URL` "
        "(run in-process as `run_load`):",
        "",
        "| server | requests | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, report in reports.items():
        latency = report.latency_ms()
        errors = "none" if report.is_success else f"{report.statuses} {report.client_errors}"
        lines.append(
            f"| {name} | {report.answers:,} | {report.throughput:,.1f} | "
            f"{latency['p50']:.1f} | {latency['p99']:.1f} | {errors} |"
        )
    return lines


def _ratio(results: dict[str, WrkResult], name: str, over: str) -> float:
    below = results[over].requests_per_second
    return results[name].requests_per_second / below if below > 0 else math.nan


def _revision_of(directory: Path) -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        completed = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return completed.stdout.strip()
    return "unknown (not a git checkout)"
