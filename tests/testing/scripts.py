"""What the smoke tests of testing/'s scripts share: running one, and checking that the
servers it started are gone."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Sequence

from testing.servers import PROJECT_DIR

SCRIPT_TIMEOUT_SECONDS = 300


def run_script(arguments: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """`python SCRIPT ARGS...` from the project folder; fails the test unless it exits 0."""
    completed = subprocess.run(
        [sys.executable, *arguments],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def is_listening(url: str) -> bool:
    """Something accepts connections at `url` (http:// or redis://, host:port)."""
    address = re.sub(r"^\w+://", "", url).split("/")[0]
    host, port = address.split(":")
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0


def started_urls(stderr: str) -> list[str]:
    """The addresses a script printed as `... ready at URL`."""
    return re.findall(r"ready at ((?:redis|http)://127\.0\.0\.1:\d+)", stderr)
