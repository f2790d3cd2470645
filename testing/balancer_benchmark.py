"""`testing/benchmark.py --through-nginx`: the predict route through nginx in front of two
gunicorn replicas, beside one gunicorn server alone, in one run (issue 8, point 6).

One fastml server (the direct one) trains `iris`; two more replicas share its model folder
behind nginx (testing/topology.py: the shipped deploy/nginx/one-machine.conf with only its
addresses changed). Each pair of wrk passes runs through nginx, then straight at the direct
server, seconds apart, so the ratio nginx / direct is judged on the same machine state.
The direct server and each replica run the same number of Uvicorn workers.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

from testing.benchmark_report import git_revision, machine_description, write_marked_section
from testing.benchmark_workload import (
    ESTIMATOR,
    ESTIMATOR_PARAMS,
    MODEL,
    PREDICT_BODY,
    TARGET,
    TRAIN_CSV,
    WARMUP_REQUESTS,
)
from testing.ceiling_pairs import PairSummary, run_pairs
from testing.fastml_api import ApiError, LocalClient, basic_auth_header, train
from testing.servers import ADMIN, start_server, stop_server
from testing.topology import start_topology, stop_topology
from testing.wrk import wrk_script

CONCURRENCIES = (16, 64)
REPLICAS = 2
SECTION_START = (
    "<!-- nginx benchmark: start (rewritten by testing/benchmark.py --through-nginx) -->"
)
SECTION_END = "<!-- nginx benchmark: end -->"
PREDICT_PATH = f"/models/{MODEL}/predict"
HEADERS = {"Content-Type": "application/json", "Authorization": basic_auth_header(*ADMIN)}


class BalancerBenchmarkError(Exception):
    """The model did not train, or a server did not answer the predict route."""


def train_iris(base_url: str) -> None:
    client = LocalClient(base_url, ADMIN)
    try:
        job = train(
            client,
            MODEL,
            TRAIN_CSV,
            TARGET,
            estimator=ESTIMATOR,
            params=json.dumps(ESTIMATOR_PARAMS),
        )
    except ApiError as exc:
        raise BalancerBenchmarkError(str(exc)) from exc
    if job["status"] != "succeeded":
        raise BalancerBenchmarkError(f"training job {job['id']} did not succeed: {job}")


def warm_up(base_url: str, name: str) -> None:
    """Every worker behind `base_url` has loaded the model before wrk starts."""
    client = LocalClient(base_url, ADMIN)
    for _ in range(WARMUP_REQUESTS):
        answer = client.post(PREDICT_PATH, content=PREDICT_BODY.encode(), headers=HEADERS)
        if answer.status_code != 200:
            raise BalancerBenchmarkError(
                f"{name} answered {answer.status_code} to the predict route: {answer.text[:300]}"
            )


def run_balancer_benchmark(
    wrk: str, workers: int, duration: int, pairs: int, command: str
) -> tuple[str, bool]:
    """Start the direct server and the topology, measure, stop them: (the section, success)."""
    started = datetime.datetime.now(datetime.UTC)
    load_at_start = os.getloadavg()
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastml-nginx-")))
        direct = start_server(work_dir / "direct", workers=workers)
        stack.callback(stop_server, direct)
        print(f"direct server ready at {direct.url}; training {MODEL}", file=sys.stderr)
        train_iris(direct.url)
        warm_up(direct.url, "the direct server")
        # The replicas share the direct server's model folder: they serve the same model.
        topology = start_topology(
            work_dir / "balanced", replicas=REPLICAS, workers=workers, model_dir=direct.model_dir
        )
        stack.callback(stop_topology, topology)
        print(f"nginx ready at {topology.url} in front of {REPLICAS} replicas", file=sys.stderr)
        warm_up(topology.url, "nginx")
        script_path = work_dir / "nginx-post.lua"
        script_path.write_text(wrk_script(PREDICT_BODY, HEADERS))
        summaries = {
            concurrency: run_pairs(
                wrk,
                topology.url + PREDICT_PATH,
                direct.url + PREDICT_PATH,
                script_path,
                concurrency,
                duration,
                pairs,
                labels=("nginx", "direct"),
            )
            for concurrency in CONCURRENCIES
        }
    load_averages = (load_at_start, os.getloadavg())
    section = format_section(command, started, load_averages, workers, duration, summaries)
    return section, not any(summary.has_errors for summary in summaries.values())


def format_section(
    command: str,
    started: datetime.datetime,
    load_averages: tuple[tuple[float, float, float], tuple[float, float, float]],
    workers: int,
    duration: int,
    summaries: dict[int, PairSummary],
) -> str:
    before, after = (" / ".join(f"{v:.2f}" for v in load) for load in load_averages)
    lines = [
        f"### Through nginx: {REPLICAS} replicas beside one server",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC at commit "
        f"`{git_revision()}`, on {machine_description()}; load average (1 / 5 / 15 min) "
        f"{before} at the start and {after} at the end. The same one-row predict request "
        f"as the HTTP table (`wrk -c<C> -d{duration}s`), through nginx "
        f"(deploy/nginx/one-machine.conf) in front of {REPLICAS} gunicorn replicas sharing one "
        f"model folder, and straight at one gunicorn server; {workers} Uvicorn workers per "
        "server. Each nginx pass is followed by a direct pass; ratio = nginx / direct, the pair "
        "with the median ratio and (min-max) over pairs. All of it on this one machine: the "
        "replicas and nginx share its cores with wrk, so this is what the balancer costs, not "
        "what a second machine adds.",
        "",
        "| concurrency | nginx req/s | p50 ms | p99 ms | direct req/s | p50 ms | p99 ms "
        "| nginx / direct (min-max) | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for concurrency, summary in summaries.items():
        nginx, direct = summary.median.predict, summary.median.ceiling
        errors = "; ".join(
            f"{name} {result.describe_errors()}"
            for pair in summary.pairs
            for name, result in (("nginx", pair.predict), ("direct", pair.ceiling))
            if result.has_errors
        )
        lines.append(
            f"| {concurrency} | {nginx.requests_per_second:.0f} | {nginx.p50_ms:.2f} "
            f"| {nginx.p99_ms:.2f} | {direct.requests_per_second:.0f} | {direct.p50_ms:.2f} "
            f"| {direct.p99_ms:.2f} | {summary.median.ratio:.2f} ({summary.ratio_min:.2f}-"
            f"{summary.ratio_max:.2f}) | {errors or 'none'} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    write_marked_section(path, section, SECTION_START, SECTION_END)
