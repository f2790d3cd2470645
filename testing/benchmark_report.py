"""The benchmark's markdown report: the run, the tables, and the file that keeps its notes."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testing.benchmark_workload import (
    ESTIMATOR,
    ESTIMATOR_PARAMS,
    MODEL,
    OWN_CLIENT_CONCURRENCY,
    OWN_CLIENT_MAX_REQUESTS,
    PREDICT_BODY,
    TEST_CSV,
    TRAIN_CSV,
)
from testing.ceiling_pairs import PairSummary
from testing.in_process_timing import InProcessResult
from testing.load_report import LoadReport
from testing.servers import PROJECT_DIR, dockerfile_command
from testing.wrk import WRK_TIMEOUT_SECONDS, WrkResult

NOTES_MARKER = "<!-- notes below are kept by testing/benchmark.py -->"
CEILING_APP = "testing.ceiling_app:app"


class ReportPathError(Exception):
    """--out names a file that could not be written, or whose content would be lost."""


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
        raise ReportPathError(f"--out {path} is a folder; pass a file path such as {path}/bench.md")
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text.strip() and NOTES_MARKER not in text:
            raise ReportPathError(
                f"{path} exists without the line {NOTES_MARKER!r}, so its content would be "
                "lost; add that line above what should be kept (nothing above it is kept), "
                "delete the file, or pass another --out"
            )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ReportPathError(f"cannot write --out {path}: folder {parent} is not writable")


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


def write_marked_section(path: Path, section: str, start: str, end: str) -> None:
    """Put `section` between the marker lines `start` and `end` in `path`, atomically; the
    first time, append it at the end. The rest of the file is kept as it is."""
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        temp_path.write_text(text, encoding="utf-8")
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)


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
        f"| servers | the Dockerfile's CMD `{shlex.join(dockerfile_command())}` and the same "
        f"with `{CEILING_APP}`, {info.workers} Uvicorn workers each, on 127.0.0.1 |",
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
