"""Finding and stopping a running server as the README shows (issue 11, point 3)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from testing.servers import start_server, stop_server
from tests.system.fault_tools import command_line

pytestmark = pytest.mark.system

STOP_DEADLINE_SECONDS = 40


def processes_titled(pattern: str) -> dict[int, str]:
    """{pid: command line} of every process whose /proc cmdline contains `pattern`."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    commands = {pid: command_line(pid).strip() for pid in pids}
    return {pid: command for pid, command in commands.items() if pattern in command}


def test_the_server_is_found_by_its_address_and_stopped_by_its_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "fastml.pid"
    server = start_server(tmp_path, {"FASTML_PID_FILE": str(pid_file)})
    try:
        bind = urlsplit(server.url).netloc
        master_pid = int(pid_file.read_text())
        assert master_pid == server.process.pid

        titled = processes_titled(f"fastml {bind}")
        assert titled[master_pid] == f"gunicorn: master [fastml {bind}]", titled
        workers = [pid for pid, title in titled.items() if title.startswith("gunicorn: worker")]
        assert len(workers) == 2, titled

        pgrep = shutil.which("pgrep")
        if pgrep is not None:  # the README's lookup, where procps is installed
            port = bind.rsplit(":", 1)[1]
            found = subprocess.run(
                [pgrep, "-f", f"fastml.*{port}"], capture_output=True, text=True, check=False
            )
            assert set(map(int, found.stdout.split())) >= {master_pid, *workers}

        # The README's recipe, word for word apart from the file's place.
        subprocess.run(
            ["sh", "-c", 'kill -TERM "$(cat "$PID_FILE")"'],
            env={"PID_FILE": str(pid_file), "PATH": "/usr/bin:/bin"},
            check=True,
        )
        assert server.process.wait(timeout=STOP_DEADLINE_SECONDS) == 0
        assert not pid_file.exists(), "gunicorn removes its pid file when it stops"
        deadline = time.monotonic() + 10
        for _ in range(100):
            if not processes_titled(f"fastml {bind}") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert processes_titled(f"fastml {bind}") == {}, "a worker outlived the master"
        output = server.output_path.read_text()
        assert "Error while closing socket" not in output, output
    finally:
        stop_server(server)
