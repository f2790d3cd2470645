"""What the fault tests share: finding our processes in /proc, and training through the API."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ML.config import PROJECT_DIR
from testing.fastml_api import train

TRAIN_CSV = PROJECT_DIR / "ML" / "data" / "train.csv"
GONE_DEADLINE_SECONDS = 30.0
SPAWNED_CHILD = "multiprocessing.spawn"  # in the command line of every pool process


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def is_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


def command_line(pid: int) -> str:
    """A process's command line (its title, once setproctitle changed it); "" once it ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [child for child in pids if parent_of(child) == pid and is_alive(child)]


def descendants_of(pid: int) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    for _ in range(10):  # gunicorn master -> worker -> pool process: three levels deep
        frontier = [child for parent in frontier for child in children_of(parent)]
        found.extend(frontier)
    return found


def training_process_of(master_pid: int, deadline_seconds: float = 30.0) -> int:
    """The pool process that trains a job (a spawned grandchild of the master)."""
    deadline = time.monotonic() + deadline_seconds
    for _ in range(1000):
        for pid in descendants_of(master_pid):
            line = command_line(pid)
            if SPAWNED_CHILD in line and "resource_tracker" not in line:
                return pid
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"no training process under gunicorn {master_pid}")


def wait_until_gone(pids: list[int]) -> list[str]:
    """The processes still alive after GONE_DEADLINE_SECONDS (empty when all died)."""
    deadline = time.monotonic() + GONE_DEADLINE_SECONDS
    for _ in range(1000):
        if not any(is_alive(pid) for pid in pids) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return [f"{pid}: {command_line(pid)}" for pid in pids if is_alive(pid)]


def train_and_wait(client: httpx.Client, name: str, csv_path: Path, target: str) -> int:
    """Train a version and return its number once the job succeeded."""
    job = train(client, name, csv_path, target)
    assert job["status"] == "succeeded", job
    return int(job["result"]["version"])
