"""wrk, the HTTP load generator: its Lua POST script, its command line, running it, its output.

wrk is Debian's `wrk` package; scripts/test installs it for CI. Nothing here installs it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Generous, so that a slow predict route shows as high latency rather than as wrk timeouts.
WRK_TIMEOUT_SECONDS = 10
WRK_INSTALL_HINT = "sudo apt-get install -y wrk (Debian/Ubuntu), or see https://github.com/wg/wrk"


class WrkError(Exception):
    """wrk is missing or a pass failed; the message says what to do."""


def find_wrk() -> str:
    """The path of wrk; WrkError saying how to install it when it is not on PATH."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(f"wrk is not installed; install it with: {WRK_INSTALL_HINT}")
    return path


def wrk_version(wrk: str) -> str:
    completed = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (completed.stdout + completed.stderr).strip().splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h)$")
_MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_REQUESTS_PER_SECOND = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)\s*$", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(\d+(?:\.\d+)?)%\s+(\S+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in (\S+), ", re.MULTILINE)
_NON_2XX = re.compile(r"^\s+Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")


def duration_ms(text: str) -> float:
    """A wrk duration such as `98.00us`, `1.05ms`, `1.64s` or `2.00m`, in milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a wrk duration; expected a number followed by us, ms, s, m or h"
        )
    return float(match[1]) * _MS_PER_UNIT[match[2]]


@dataclass(frozen=True)
class WrkResult:
    """What one wrk pass measured; `non_2xx` counts answers with a status of 400 or more."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def has_errors(self) -> bool:
        return self.non_2xx > 0 or any(self.socket_errors.values())

    def describe_errors(self) -> str:
        """`none`, or e.g. `non-2xx 12, timeout 3`."""
        parts = [f"non-2xx {self.non_2xx}"] if self.non_2xx else []
        parts += [f"{kind} {n}" for kind, n in self.socket_errors.items() if n]
        return ", ".join(parts) or "none"


def parse_wrk_output(text: str) -> WrkResult:
    """Parse what `wrk --latency` prints; ValueError naming the line that is missing."""
    rate = _REQUESTS_PER_SECOND.search(text)
    total = _TOTAL.search(text)
    if rate is None or total is None:
        missing = "Requests/sec:" if rate is None else "N requests in T"
        raise ValueError(
            f"wrk output has no {missing!r} line; run wrk with --latency and pass its stdout:\n"
            f"{text}"
        )
    percentiles = {float(m[1]): duration_ms(m[2]) for m in _PERCENTILE.finditer(text)}
    if 50.0 not in percentiles or 99.0 not in percentiles:
        raise ValueError(
            f"wrk output has no latency distribution with 50% and 99%; run wrk with --latency:\n"
            f"{text}"
        )
    non_2xx = _NON_2XX.search(text)
    socket_errors = _SOCKET_ERRORS.search(text)
    return WrkResult(
        requests_per_second=float(rate[1]),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        requests=int(total[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=(
            dict(zip(SOCKET_ERROR_KINDS, map(int, socket_errors.groups()), strict=True))
            if socket_errors
            else {}
        ),
    )


def lua_string(text: str) -> str:
    """`text` as a Lua string literal: printable ASCII kept, everything else as \\ddd bytes."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\' or not 32 <= byte < 127:
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def wrk_script(body: str, headers: dict[str, str]) -> str:
    """A wrk Lua script that POSTs `body` with `headers` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def wrk_threads(concurrency: int) -> int:
    return min(2, concurrency)


def wrk_command(
    wrk: str, url: str, concurrency: int, duration: int, script_path: Path | str
) -> list[str]:
    return [
        wrk,
        f"-t{wrk_threads(concurrency)}",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        f"{WRK_TIMEOUT_SECONDS}s",
        "-s",
        str(script_path),
        url,
    ]


def run_wrk(wrk: str, url: str, concurrency: int, duration: int, script_path: Path) -> WrkResult:
    command = wrk_command(wrk, url, concurrency, duration, script_path)
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=duration + 120
    )
    if completed.returncode != 0:
        raise WrkError(
            f"{shlex.join(command)} failed with code {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return parse_wrk_output(completed.stdout)
