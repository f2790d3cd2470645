"""What training costs through the server against the same fit in a plain script (issue 10, 3).

    python testing/training_cost.py [--rows 1000000] [--rounds 2] [--json report.json]

Generates a seeded CSV once (20 numeric feature columns and an integer `label` of 3 classes,
6 significant digits a cell: about 200 MB at 1M rows) and keeps it for the next run. Then,
per round and per estimator, alternately (the order flips each round, the machine drifts):

- plain: a subprocess that reads the CSV with pandas.read_csv, splits it as the server does
  (train_test_split, test_size 0.2, stratified, random_state 42), fits the bare scikit-learn
  estimator with the registry's parameters, and scores the test part: what a data scientist
  writes. Wall time of the subprocess (interpreter start and imports included, as the job's
  spawned process includes them), its CPU time and peak RSS (rusage from wait4).
- server: POST /models/{name}/train to a real gunicorn (the Dockerfile's CMD, one worker)
  with the CSV streamed from disk by httpx. Wall time from submission to the job's
  finished_at; CPU time of the job's pool process plus the API worker's during the upload;
  peak RSS of the job's pool process (its VmHWM, sampled until it exits); the API worker's
  RSS growth during the upload (a streamed upload leaves it flat).

Both run with one numeric thread: the server pins its job processes to one (OMP_NUM_THREADS,
threadpoolctl), so the plain script gets the same environment. Prints a table and the ratios
(median server / median plain); `--json` writes every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from testing.servers import Server

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

TARGET = "label"
FEATURE_COLUMNS = 20
CLASSES = 3
SEED = 0
# What the server does with a train request that sets only these params (ML/estimators.py
# defaults, ML/training.py's holdout): tests/testing/test_training_cost.py checks they agree.
REQUEST_PARAMS: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 20},
    "hist_gradient_boosting": {},
}
RANDOM_STATE = 42
TEST_SIZE = 0.2
# The environment of the server's job processes (ML/job_runner.py THREAD_LIMIT_ENV).
ONE_THREAD_ENV = dict.fromkeys(
    (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ),
    "1",
)
SAMPLE_SECONDS = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JOB_DEADLINE_SECONDS = 3600.0
# Not more often: the wall time is the job's finished_at, whatever the polling.
JOB_POLL_SECONDS = 1.0
# Above the default limit (256 MiB) so that a run with more columns or rows is not refused.
MAX_UPLOAD_BYTES = 2 << 30


# ---------------------------------------------------------------------------------------------
# The data set and the plain fit
# ---------------------------------------------------------------------------------------------


def write_dataset(path: Path, rows: int) -> None:
    """A seeded classification problem: FEATURE_COLUMNS floats (10 informative) and TARGET."""
    import pandas as pd
    from sklearn.datasets import make_classification

    features, labels = make_classification(
        n_samples=rows,
        n_features=FEATURE_COLUMNS,
        n_informative=10,
        n_redundant=5,
        n_classes=CLASSES,
        random_state=SEED,
    )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(FEATURE_COLUMNS)])
    frame[TARGET] = labels
    partial = path.with_suffix(".partial")
    frame.to_csv(partial, index=False, float_format="%.6g")
    partial.replace(path)


def plain_estimator(name: str) -> Any:
    """The bare estimator with the parameters the server's registry gives it for the request."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if name == "random_forest":
        return RandomForestClassifier(**REQUEST_PARAMS[name], random_state=RANDOM_STATE, n_jobs=1)
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(**REQUEST_PARAMS[name], random_state=RANDOM_STATE)
    raise ValueError(f"no plain fit for {name}; choose from {', '.join(REQUEST_PARAMS)}")


def plain_fit(csv_path: Path, estimator: str) -> dict[str, Any]:
    """Read, split, fit and score as a plain script would (run in its own process)."""
    started = time.perf_counter()
    import pandas as pd
    from sklearn.model_selection import train_test_split

    imported = time.perf_counter()
    frame = pd.read_csv(csv_path)
    labels = frame.pop(TARGET)
    read = time.perf_counter()
    train_x, test_x, train_y, test_y = train_test_split(
        frame, labels, test_size=TEST_SIZE, random_state=RANDOM_STATE, stratify=labels
    )
    model = plain_estimator(estimator).fit(train_x, train_y)
    fitted = time.perf_counter()
    accuracy = float(model.score(test_x, test_y))
    return {
        "accuracy": accuracy,
        "import_seconds": imported - started,
        "read_seconds": read - imported,
        "fit_seconds": fitted - read,
        "score_seconds": time.perf_counter() - fitted,
    }


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str  # "plain" or "server"
    estimator: str
    round: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    accuracy: float
    details: dict[str, Any] = field(default_factory=dict)


def run_plain(csv_path: Path, estimator: str, round_number: int) -> Run:
    command = [sys.executable, __file__, "--plain-fit", estimator, "--csv", str(csv_path)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env={**os.environ, **ONE_THREAD_ENV}, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the plain fit of {estimator} exited with {process.returncode}")
    details = json.loads(output)
    return Run(
        "plain",
        estimator,
        round_number,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
        details.pop("accuracy"),
        details,
    )


def proc_status_kib(pid: int, key: str) -> int | None:
    """A `VmRSS`/`VmHWM` line of /proc/PID/status in KiB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # utime and stime: fields 14 and 15 of stat, counted from the state field (3).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(parent: int) -> list[int]:
    """Every process whose parent is `parent` (any of its threads: the job pool spawns from
    a thread of its own, which /proc/PID/task/PID/children would not list)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command may hold spaces and parentheses: fields follow the last ')'.
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            pids.append(int(entry))
    return pids


def is_job_process(pid: int) -> bool:
    """A spawned pool process (not multiprocessing's resource tracker)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b"spawn_main" in command


class MemorySampler:
    """Samples, in a thread, the API worker's RSS and CPU time, and the peak RSS (VmHWM) and
    CPU time of its job processes."""

    def __init__(self, worker_pid: int) -> None:
        self.worker_pid = worker_pid
        self.worker_rss: list[tuple[float, int]] = []  # (time.time(), KiB)
        self.worker_cpu: list[tuple[float, float]] = []  # (time.time(), CPU seconds)
        self.job_peaks: dict[int, int] = {}  # pid -> VmHWM KiB, the last read
        self.job_cpu: dict[int, float] = {}  # pid -> CPU seconds, the last read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # one sample after everything the caller measured

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        now = time.time()
        rss, cpu = proc_status_kib(self.worker_pid, "VmRSS"), cpu_seconds(self.worker_pid)
        if rss is not None and cpu is not None:
            self.worker_rss.append((now, rss))
            self.worker_cpu.append((now, cpu))
        for pid in child_pids(self.worker_pid):
            if pid in self.job_peaks or is_job_process(pid):
                peak, cpu = proc_status_kib(pid, "VmHWM"), cpu_seconds(pid)
                if peak is not None and cpu is not None:
                    self.job_peaks[pid] = max(peak, self.job_peaks.get(pid, 0))
                    self.job_cpu[pid] = cpu

    def worker_cpu_between(self, start: float, end: float) -> float:
        """The API worker's CPU seconds from the last sample before `start` to the first
        after `end` (the job's polling comes later and is not counted)."""
        before = [cpu for at, cpu in self.worker_cpu if at <= start]
        after = [cpu for at, cpu in self.worker_cpu if at >= end]
        return after[0] - before[-1]

    def worker_rss_between(self, start: float, end: float) -> tuple[int, int]:
        """(RSS before `start`, highest RSS from `start` to `end`), KiB."""
        before = [rss for at, rss in self.worker_rss if at < start]
        during = [rss for at, rss in self.worker_rss if start <= at <= end]
        baseline = before[-1] if before else self.worker_rss[0][1]
        return baseline, max(during, default=baseline)

    def job_process_cpu(self) -> float:
        """CPU seconds of the process that ran the job: the one with the highest peak (the
        pool may have started an idle replacement meanwhile)."""
        pid = max(self.job_peaks, key=self.job_peaks.__getitem__, default=None)
        return 0.0 if pid is None else self.job_cpu[pid]

    def wait_for_job_processes_to_exit(self, deadline_seconds: float = 10.0) -> None:
        """The job's process exits after its job (max_tasks_per_child=1): its VmHWM is final."""
        deadline = time.monotonic() + deadline_seconds
        peak = max(self.job_peaks.items(), key=lambda item: item[1], default=None)
        while peak and proc_status_kib(peak[0], "VmHWM") is not None:
            if time.monotonic() > deadline:
                break
            time.sleep(SAMPLE_SECONDS)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run_server(server: Server, csv_path: Path, estimator: str, round_number: int) -> Run:
    (worker_pid,) = child_pids(server.process.pid)
    name = f"cost-{estimator.replace('_', '-')}"
    with api_client(server) as client, MemorySampler(worker_pid) as sampler:
        with csv_path.open("rb") as csv_file:
            submitted = time.time()
            answer = client.post(
                f"/models/{name}/train",
                data={
                    "target_variable": TARGET,
                    "estimator": estimator,
                    "params": json.dumps(REQUEST_PARAMS[estimator]),
                },
                files={"csv_file": (csv_path.name, csv_file, "text/csv")},
            )
        accepted = time.time()
        if answer.status_code != 202:
            raise RuntimeError(f"train answered {answer.status_code}: {answer.text}")
        job = wait_for_job(client, answer.json()["id"])
        sampler.wait_for_job_processes_to_exit()
    if job["status"] != "succeeded":
        raise RuntimeError(f"the training job ended {job['status']}: {job['error']}")
    with api_client(server) as client:
        version = client.get(job["links"]["version"]).json()
    finished = epoch(job["finished_at"])
    baseline, upload_peak = sampler.worker_rss_between(submitted, accepted)
    # The API worker's part: receiving, parsing and saving the upload, checking its header.
    upload_cpu = sampler.worker_cpu_between(submitted, accepted)
    details = {
        "upload_seconds": accepted - submitted,
        "queued_seconds": epoch(job["started_at"]) - epoch(job["created_at"]),
        "job_seconds": finished - epoch(job["started_at"]),
        "train_model_seconds": version["metadata"]["duration_seconds"],
        "job_process_cpu_seconds": sampler.job_process_cpu(),
        "upload_cpu_seconds": upload_cpu,
        "worker_rss_before_mib": baseline / 1024,
        "worker_rss_growth_during_upload_mib": (upload_peak - baseline) / 1024,
        "job_processes": len(sampler.job_peaks),
    }
    return Run(
        "server",
        estimator,
        round_number,
        finished - submitted,
        sampler.job_process_cpu() + upload_cpu,
        max(sampler.job_peaks.values(), default=0) / 1024,
        float(job["result"]["metrics"]["accuracy"]),
        details,
    )


def api_client(server: Server) -> httpx.Client:
    import httpx

    from testing.servers import ADMIN

    # A 1M-row upload and its copy to disk outlast any short timeout on a loaded machine.
    return httpx.Client(base_url=server.url, auth=ADMIN, timeout=httpx.Timeout(30, read=600))


def wait_for_job(client: Any, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(JOB_POLL_SECONDS)
    raise RuntimeError(f"job {job_id} did not finish in {JOB_DEADLINE_SECONDS:.0f} s")


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def median_of(runs: Sequence[Run], mode: str, estimator: str, key: str) -> float:
    values = [getattr(run, key) for run in runs if run.mode == mode and run.estimator == estimator]
    return statistics.median(values)


def report(runs: Sequence[Run], estimators: Sequence[str]) -> str:
    lines = [
        "| estimator | mode | round | wall s | CPU s | peak RSS MiB | accuracy | phases (s) |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for run in runs:
        phases = ", ".join(
            f"{key.removesuffix('_seconds')} {value:.1f}"
            for key, value in run.details.items()
            if key.endswith("_seconds")
        )
        if run.mode == "server":
            phases += (
                f"; API worker RSS {run.details['worker_rss_before_mib']:.0f} MiB, "
                f"+{run.details['worker_rss_growth_during_upload_mib']:.1f} during the upload"
            )
        lines.append(
            f"| {run.estimator} | {run.mode} | {run.round} | {run.wall_seconds:.1f} | "
            f"{run.cpu_seconds:.1f} | {run.peak_rss_mib:.0f} | {run.accuracy:.4f} | {phases} |"
        )
    lines += [
        "",
        "| estimator | wall time ratio | CPU time ratio | peak memory ratio |",
        "|---|---|---|---|",
    ]
    for estimator in estimators:
        ratios = [
            median_of(runs, "server", estimator, key) / median_of(runs, "plain", estimator, key)
            for key in ("wall_seconds", "cpu_seconds", "peak_rss_mib")
        ]
        lines.append(f"| {estimator} | {' | '.join(f'{ratio:.2f}' for ratio in ratios)} |")
    lines.append("(server / plain, medians over rounds)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--estimators", nargs="+", default=list(REQUEST_PARAMS), choices=list(REQUEST_PARAMS)
    )
    parser.add_argument("--csv", type=Path, help="the data set (generated if missing)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--plain-fit", help=argparse.SUPPRESS)  # the plain script's process
    args = parser.parse_args()
    if args.plain_fit:
        print(json.dumps(plain_fit(args.csv, args.plain_fit)))
        return

    from testing.servers import start_server, stop_server

    csv_path: Path = args.csv or Path(tempfile.gettempdir()) / (
        f"fastml_training_cost_{args.rows}x{FEATURE_COLUMNS}_seed{SEED}.csv"
    )
    if not csv_path.exists():
        print(f"writing {csv_path} ...", file=sys.stderr)
        write_dataset(csv_path, args.rows)
    print(
        f"{csv_path}: {csv_path.stat().st_size / 2**20:.0f} MiB; load average "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}",
        file=sys.stderr,
    )
    # A run is long: a `kill` must stop the server too (it runs in a session of its own).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="fastml-training-cost-") as work_dir:
        server = start_server(
            Path(work_dir),
            {"FASTML_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)},
            name="training-cost",
            workers=1,
        )
        try:
            for round_number in range(1, args.rounds + 1):
                for estimator in args.estimators:
                    modes = ["plain", "server"] if round_number % 2 else ["server", "plain"]
                    for mode in modes:
                        if mode == "plain":
                            run = run_plain(csv_path, estimator, round_number)
                        else:
                            run = run_server(server, csv_path, estimator, round_number)
                        runs.append(run)
                        if args.json:
                            write_json(args.json, args.rows, csv_path, runs)
                        print(
                            f"round {round_number} {estimator} {mode}: "
                            f"{run.wall_seconds:.1f} s, {run.cpu_seconds:.1f} CPU s, "
                            f"{run.peak_rss_mib:.0f} MiB; load "
                            f"{os.getloadavg()[0]:.2f}",
                            file=sys.stderr,
                        )
        finally:
            stop_server(server)
    print(report(runs, args.estimators))


def write_json(path: Path, rows: int, csv_path: Path, runs: Sequence[Run]) -> None:
    """Every measurement so far (written after each run: a long run's half is kept)."""
    path.write_text(
        json.dumps(
            {
                "rows": rows,
                "csv_bytes": csv_path.stat().st_size,
                "load_average": os.getloadavg(),
                "runs": [asdict(run) for run in runs],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
