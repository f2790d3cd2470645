"""Training jobs per minute on 1 and 2 Celery workers, and Redis commands per job (issue 8).

    python testing/jobs_throughput.py [--workers 1,2] [--iris-jobs 20] [--large-jobs 4]
                                      [--large-rows 200000] [--out docs/benchmarks.md]

Real processes on this machine: a private `redis-server` on a free port, one gunicorn API
server (2 Uvicorn workers) in the Celery mode, and `celery --app ML.tasks worker` processes
(the README's command, one job at a time each: testing/celery_workers.py). For each worker
count, and for iris (ML/data/train.csv) and a seeded CSV of --large-rows rows, N training
jobs (the default random forest) are submitted at once; the wall time runs from the first
submission to the last job done. Redis commands are counted from `INFO commandstats`: the
delta over a pass, minus what the workers and the API do when idle (measured first, per
second) and minus what our own status polls cost (measured per poll), divided by the jobs.

Exit code: 0 when every job succeeded, 1 when one did not, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as `python testing/jobs_throughput.py`: make the project root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from testing.benchmark import sigterm_as_interrupt
from testing.benchmark_report import git_revision, machine_description, write_marked_section
from testing.benchmark_workload import TRAIN_CSV
from testing.celery_workers import start_worker, stop_worker
from testing.fastml_api import FINISHED, ApiError, LocalClient, submit_training, wait_for_job
from testing.servers import ADMIN, PROJECT_DIR, ServerError, start_server, stop_server
from tests.redis_fixture import RedisServer

DEFAULT_OUT = PROJECT_DIR / "docs" / "benchmarks.md"
SECTION_START = "<!-- jobs throughput: start (rewritten by testing/jobs_throughput.py) -->"
SECTION_END = "<!-- jobs throughput: end -->"
LARGE_SEED = 8
IDLE_SECONDS = 5.0
POLL_SECONDS = 0.2
POLL_CALIBRATION_GETS = 50
PASS_DEADLINE_SECONDS = 3600.0
IGNORED_COMMANDS = frozenset({"info"})  # our own counting


class ThroughputError(Exception):
    """The run cannot go on: no redis-server, a server or worker that does not start."""


@dataclass(frozen=True)
class Dataset:
    name: str
    csv_path: Path
    target: str
    rows: int
    jobs: int


Calls = dict[str, float]  # Redis calls per command


@dataclass(frozen=True)
class PassResult:
    dataset: Dataset
    workers: int
    wall_seconds: float
    job_seconds: list[float]  # each succeeded job's started_at to finished_at
    failed: list[str]
    commands: Calls  # over the pass, less our own status polls
    background: frozenset[str]  # the commands Redis also sees when no job is queued
    memory_bytes: int  # Redis's used_memory after the pass minus before: the records kept
    cpu_seconds: float  # of the workers and their job processes over the pass
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def jobs_per_minute(self) -> float:
        return self.dataset.jobs / self.wall_seconds * 60

    @property
    def cpu_seconds_per_job(self) -> float:
        return self.cpu_seconds / self.dataset.jobs

    @property
    def job_commands(self) -> Calls:
        """The commands only jobs cause (none of those the idle processes also send)."""
        return {n: v for n, v in self.commands.items() if n not in self.background}

    @property
    def background_commands(self) -> Calls:
        return {n: v for n, v in self.commands.items() if n in self.background}

    @property
    def commands_per_job(self) -> float:
        return sum(self.job_commands.values()) / self.dataset.jobs


@dataclass(frozen=True)
class Overheads:
    """What Redis sees besides the jobs: per second when idle, per GET /jobs/{id}."""

    idle_per_second: dict[int, Calls]  # by worker count
    per_poll: Calls


def write_large_csv(path: Path, rows: int) -> None:
    """A seeded 4-feature, 3-class CSV: learnable, with noise, so the forest grows real trees."""
    generator = random.Random(LARGE_SEED)
    with path.open("w", encoding="utf-8") as file:
        file.write("a,b,c,d,label\n")
        for _ in range(rows):
            label = generator.randrange(3)
            a, b = generator.gauss(label, 1.0), generator.gauss(-label, 1.5)
            c, d = generator.uniform(0, 10), generator.gauss(label * 2, 3.0)
            file.write(f"{a:.4f},{b:.4f},{c:.4f},{d:.4f},k{label}\n")


def command_calls(client: redis.Redis) -> Calls:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): float(value["calls"])
        for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in IGNORED_COMMANDS
    }


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time of the processes `pids` and of their children (a Celery worker's job
    processes, one per job): those that ended and were waited for, those still running and
    those that ended but are not waited for yet, from /proc/{pid}/stat."""
    ticks = sum(_stat_ticks(pid) for pid in pids)  # the parents first: see below
    # A child waited for between the two reads is missed (a few ticks), never counted twice.
    ticks += sum(_stat_ticks(pid) for pid in _children(frozenset(pids)))
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _stat_ticks(pid: int) -> int:
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return sum(int(value) for value in fields[11:15])  # utime stime cutime cstime


def _children(parents: frozenset[int]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if int(_stat_fields(int(entry.name))[1]) in parents:
                    found.append(int(entry.name))
    return found


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def combine(after: Calls, before: Calls, factor: float = 1.0) -> Calls:
    """(after - before) * factor, per command, dropping what did not change."""
    names = set(after) | set(before)
    delta = {name: (after.get(name, 0.0) - before.get(name, 0.0)) * factor for name in names}
    return {name: value for name, value in delta.items() if value}


def idle_rate(client: redis.Redis) -> Calls:
    """Redis calls per second while nothing is submitted (workers waiting, API idle)."""
    before = command_calls(client)
    time.sleep(IDLE_SECONDS)
    return combine(command_calls(client), before, 1 / IDLE_SECONDS)


def poll_cost(client: redis.Redis, api: LocalClient, job_id: str, idle: Calls) -> Calls:
    """Redis calls of one GET /jobs/{id}, so our own polling can be taken out of a pass."""
    before, started = command_calls(client), time.monotonic()
    for _ in range(POLL_CALIBRATION_GETS):
        api.get(f"/jobs/{job_id}")
    measured = combine(command_calls(client), before)
    background = {name: rate * (time.monotonic() - started) for name, rate in idle.items()}
    return combine(measured, background, 1 / POLL_CALIBRATION_GETS)


def submit_all(api: LocalClient, dataset: Dataset, model: str) -> list[str]:
    """Submit the dataset's jobs at once (one thread each); their ids in submission order."""

    def submit(_: int) -> str:
        answer = submit_training(api, model, dataset.csv_path, dataset.target)
        if answer.status_code != 202:
            raise ApiError(f"training was refused with {answer.status_code}: {answer.text}")
        return str(answer.json()["id"])

    with ThreadPoolExecutor(max_workers=dataset.jobs) as pool:
        return list(pool.map(submit, range(dataset.jobs)))


def wait_all(api: LocalClient, job_ids: Sequence[str]) -> tuple[list[dict[str, Any]], int]:
    """Wait for every job, polling only the oldest unfinished one (the queue is first in,
    first out): (the finished records, how many GET /jobs/{id} that took)."""
    deadline = time.monotonic() + PASS_DEADLINE_SECONDS
    finished: list[dict[str, Any]] = []
    polls = 0
    for job_id in job_ids:
        while True:
            answer = api.get(f"/jobs/{job_id}")
            polls += 1
            if answer.status_code != 200:
                raise ApiError(f"GET /jobs/{job_id} answered {answer.status_code}: {answer.text}")
            job = answer.json()
            if job["status"] in FINISHED:
                finished.append(job)
                break
            if time.monotonic() > deadline:
                raise ApiError(f"job {job_id} did not finish in {PASS_DEADLINE_SECONDS:.0f} s")
            time.sleep(POLL_SECONDS)
    return finished, polls


def run_seconds(job: dict[str, Any]) -> float:
    started = datetime.datetime.fromisoformat(job["started_at"])
    return (datetime.datetime.fromisoformat(job["finished_at"]) - started).total_seconds()


def run_pass(
    client: redis.Redis,
    api: LocalClient,
    dataset: Dataset,
    worker_pids: Sequence[int],
    overheads: Overheads,
) -> PassResult:
    workers = len(worker_pids)
    print(f"{dataset.name}: {dataset.jobs} jobs on {workers} worker(s)", file=sys.stderr)
    load_before = os.getloadavg()
    memory_before, cpu_before = used_memory(client), cpu_seconds(worker_pids)
    before, started = command_calls(client), time.monotonic()
    job_ids = submit_all(api, dataset, f"{dataset.name}-{workers}w")
    jobs, polls = wait_all(api, job_ids)
    wall = time.monotonic() - started
    measured = combine(command_calls(client), before)
    ours = {name: count * polls for name, count in overheads.per_poll.items()}
    result = PassResult(
        dataset=dataset,
        workers=workers,
        wall_seconds=wall,
        job_seconds=[run_seconds(job) for job in jobs if job["status"] == "succeeded"],
        failed=[
            f"{job['id']}: {job['status']} {job.get('error')}"
            for job in jobs
            if job["status"] != "succeeded"
        ],
        commands=combine(measured, ours),
        background=frozenset(overheads.idle_per_second[workers]),
        memory_bytes=used_memory(client) - memory_before,
        cpu_seconds=cpu_seconds(worker_pids) - cpu_before,
        load_before=load_before,
        load_after=os.getloadavg(),
    )
    print(
        f"  {wall:.1f} s, {result.jobs_per_minute:.1f} jobs/min, "
        f"{result.cpu_seconds_per_job:.1f} CPU s and {result.commands_per_job:.0f} Redis commands "
        "per job",
        file=sys.stderr,
    )
    return result


@dataclass(frozen=True)
class Options:
    worker_counts: tuple[int, ...]
    iris_jobs: int
    large_jobs: int
    large_rows: int
    out: Path | None


def datasets(options: Options, work_dir: Path) -> list[Dataset]:
    iris_rows = len(TRAIN_CSV.read_text().splitlines()) - 1
    found = [Dataset("iris", TRAIN_CSV, "species", iris_rows, options.iris_jobs)]
    if options.large_jobs:
        path = work_dir / f"seeded-{options.large_rows}.csv"
        write_large_csv(path, options.large_rows)
        found.append(Dataset("seeded", path, "label", options.large_rows, options.large_jobs))
    return found


def run(options: Options) -> tuple[list[PassResult], Overheads]:
    """Redis, the API server, then per worker count its workers and a pass per dataset."""
    if shutil.which("redis-server") is None:
        raise ThroughputError("redis-server is not on PATH (Debian: apt-get install redis-server)")
    results: list[PassResult] = []
    overheads = Overheads({}, {})
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastml-jobs-")))
        data = datasets(options, work_dir)
        redis_server = RedisServer(work_dir / "redis", append_only=True)
        redis_server.start()
        stack.callback(redis_server.stop)
        client = redis.Redis.from_url(redis_server.url)
        stack.callback(client.close)
        api_server = start_server(work_dir, {"FASTML_BROKER_URL": redis_server.url})
        stack.callback(stop_server, api_server)
        print(f"redis ready at {redis_server.url}, API ready at {api_server.url}", file=sys.stderr)
        api = LocalClient(api_server.url, ADMIN, timeout=120)
        for count in options.worker_counts:
            with contextlib.ExitStack() as workers:
                worker_pids = []
                for index in range(count):
                    worker = start_worker(work_dir, redis_server.url, name=f"w{index + 1}")
                    workers.callback(stop_worker, worker)
                    worker_pids.append(worker.process.pid)
                if not overheads.per_poll:
                    # One job first: the API and Redis are warm, and a finished job to poll.
                    warm_up = train_and_wait(api)
                    overheads.idle_per_second[count] = idle_rate(client)
                    per_poll = poll_cost(client, api, warm_up, overheads.idle_per_second[count])
                    overheads = Overheads(overheads.idle_per_second, per_poll)
                else:
                    overheads.idle_per_second[count] = idle_rate(client)
                results += [
                    run_pass(client, api, dataset, worker_pids, overheads) for dataset in data
                ]
    return results, overheads


def train_and_wait(api: LocalClient) -> str:
    answer = submit_training(api, "warm-up", TRAIN_CSV, "species")
    if answer.status_code != 202:
        raise ApiError(f"training was refused with {answer.status_code}: {answer.text}")
    job = wait_for_job(api, answer.json()["id"])
    if job["status"] != "succeeded":
        raise ThroughputError(f"the warm-up job did not succeed: {job}")
    return str(job["id"])


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _calls(calls: Calls, divisor: float = 1.0, top: int = 8) -> str:
    """The `top` commands by calls, e.g. `hset 4.0, hget 4.0`; none that round to 0.0."""
    shown = [(name, value / divisor) for name, value in calls.items()]
    ordered = sorted((item for item in shown if abs(item[1]) >= 0.05), key=lambda i: -i[1])
    return ", ".join(f"{name} {value:.1f}" for name, value in ordered[:top]) or "none"


def format_section(
    command: str, started: datetime.datetime, results: list[PassResult], overheads: Overheads
) -> str:
    lines = [
        "### Training jobs per minute on Celery workers",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC at commit "
        f"`{git_revision()}`, on {machine_description()}. A private `redis-server` "
        "(`--appendonly yes --appendfsync always`), one API server (the Dockerfile's CMD, 2 "
        "Uvicorn workers, `FASTML_BROKER_URL` set), and W job workers, each "
        "`celery --app ML.tasks worker --pool prefork --concurrency 1` (one job at a time, a "
        "fresh process per job). A pass submits all its jobs at once (`POST "
        "/models/{name}/train`, the default estimator: random_forest, 100 trees), one thread "
        "each; wall = first submission to last job done (polled every "
        f"{POLL_SECONDS} s); jobs/min = jobs / wall. Job s = the median time a job ran on "
        "its worker (`started_at` to `finished_at`). CPU s per job = the CPU time of the "
        "worker processes and their job processes (one per job, ended or not) over the "
        "pass, from /proc, divided by the jobs: what a job costs whatever the load; 60 / it "
        "is the jobs one idle core can run per minute. Redis commands per job = the `INFO "
        "commandstats` delta over the pass (INFO itself left out) less our own status polls "
        "(calibrated per `GET /jobs/{id}`), counting only the commands that idle processes do "
        "not send, divided by the jobs; the others (the background below) go on whether "
        "jobs run or not, and are given per second. Redis bytes per job = "
        "its `used_memory` after the pass minus before, divided by the jobs (the records "
        "kept, the queue being empty again). Load average is "
        "1 / 5 / 15 min, at the start and the end of the pass: the machine was shared with "
        "other work, and on 2 cores two workers can at most double one worker's rate.",
        "",
        "| data | rows | workers | jobs | wall s | jobs/min | job s | CPU s per job "
        "| Redis commands per job | Redis bytes per job | load before | load after | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for result in results:
        median = statistics.median(result.job_seconds) if result.job_seconds else math.nan
        lines.append(
            f"| {result.dataset.name} | {result.dataset.rows:,} | {result.workers} "
            f"| {result.dataset.jobs} | {result.wall_seconds:.1f} | {result.jobs_per_minute:.1f} "
            f"| {median:.2f} | {result.cpu_seconds_per_job:.2f} | {result.commands_per_job:.0f} "
            f"| {result.memory_bytes / result.dataset.jobs:,.0f} | {_load(result.load_before)} "
            f"| {_load(result.load_after)} | {'; '.join(result.failed) or 'none'} |"
        )
    lines += ["", "Redis besides the jobs:", ""]
    for count, idle in overheads.idle_per_second.items():
        lines.append(
            f"- idle, {count} worker(s) and the API: {sum(idle.values()):.1f} commands/s "
            f"({_calls(idle)})"
        )
    lines.append(
        f"- one `GET /jobs/{{id}}`: {sum(overheads.per_poll.values()):.1f} commands "
        f"({_calls(overheads.per_poll)})"
    )
    lines += ["", "Commands by pass: per job, and the background per second meanwhile:", ""]
    lines += [
        f"- {result.dataset.name}, {result.workers} worker(s): per job "
        f"{_calls(result.job_commands, result.dataset.jobs)}; background "
        f"{_calls(result.background_commands, result.wall_seconds)} per s"
        for result in results
    ]
    return "\n".join(lines) + "\n"


def worker_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ThroughputError(f"--workers takes counts of at least 1 separated by commas: {text!r}")
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Training jobs per minute on 1 and 2 Celery workers, and Redis commands "
        "per job, with real redis-server, gunicorn and Celery processes. Prints a markdown "
        "section; --out rewrites that section of a file. Exit code 0 when every job "
        "succeeded, 1 when one did not, 2 when the run could not start, 130 when interrupted."
    )
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2 (1,2)")
    parser.add_argument("--iris-jobs", type=int, default=20, help="iris jobs per pass (20)")
    parser.add_argument(
        "--large-jobs", type=int, default=4, help="jobs on the seeded CSV per pass (4; 0: none)"
    )
    parser.add_argument(
        "--large-rows", type=int, default=200_000, help="rows of the seeded CSV (200000)"
    )
    parser.add_argument("--out", type=Path, default=None, help="e.g. docs/benchmarks.md")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    for name, value, least in (
        ("--iris-jobs", args.iris_jobs, 1),
        ("--large-jobs", args.large_jobs, 0),
        ("--large-rows", args.large_rows, 1),
    ):
        if value < least:
            raise ThroughputError(f"{name} must be at least {least}; got {value}")
    return Options(
        worker_counts(args.workers), args.iris_jobs, args.large_jobs, args.large_rows, args.out
    )


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "testing/jobs_throughput.py", *given])
    started = datetime.datetime.now(datetime.UTC)
    try:
        options = options_from_args(build_parser().parse_args(given))
        with sigterm_as_interrupt():
            results, overheads = run(options)
    except (ThroughputError, ApiError, ServerError, redis.RedisError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    section = format_section(command, started, results, overheads)
    print(section)
    if options.out is not None:
        write_marked_section(options.out, section, SECTION_START, SECTION_END)
        print(f"section written to {options.out}", file=sys.stderr)
    return 0 if not any(result.failed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
