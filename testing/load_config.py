"""What one load test is: its validated options, and the refusal of non-loopback targets."""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from testing.load_credentials import Credentials, CredentialsError, resolve_credentials

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CSV = PROJECT_DIR / "ML" / "data" / "test.csv"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Payload(enum.StrEnum):
    JSON = "json"
    CSV = "csv"
    COMPAT = "compat"


class LoadTestError(Exception):
    """A load test that cannot start: a bad option, an unreadable CSV, a refused target."""


class RemoteTargetRefused(LoadTestError):
    """The target host is not a loopback address and remote targets were not allowed."""


@dataclass(frozen=True)
class LoadConfig:
    """Everything one load test needs; validated when built."""

    requests: int = 1000
    url: str = "http://127.0.0.1:8000"
    model: str = "iris"
    # None: from the environment, else the server's generated admin (testing/load_credentials.py).
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    concurrency: int = 64
    duration: float | None = None
    payload: Payload = Payload.JSON
    csv_path: Path = DEFAULT_CSV
    target: str = "species"
    rate: float | None = None
    timeout: float = 30.0
    show_progress: bool = True
    allow_remote: bool = False
    credentials: Credentials = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise LoadTestError(f"the number of requests must be at least 1; got {self.requests}")
        if self.concurrency < 1:
            raise LoadTestError(f"--concurrency must be at least 1; got {self.concurrency}")
        for name in ("duration", "rate", "timeout"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise LoadTestError(f"--{name} must be a positive number; got {value}")
        if not MODEL_NAME.match(self.model):
            raise LoadTestError(
                f"model name {self.model!r} is not valid; use lowercase letters, digits, "
                "'_' and '-', starting with a letter or digit, at most 64 characters"
            )
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoadTestError(f"--url must look like http://127.0.0.1:8000; got {self.url!r}")
        try:
            credentials = resolve_credentials(self.user, self.password)
        except CredentialsError as exc:
            raise LoadTestError(str(exc)) from None
        if ":" in credentials.user:
            raise LoadTestError(
                f"user name {credentials.user!r} contains ':', which basic auth forbids"
            )
        object.__setattr__(self, "credentials", credentials)

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        if self.payload is Payload.COMPAT:
            return f"{base}/get_prediction"
        if self.payload is Payload.CSV:
            return f"{base}/models/{self.model}/predict/csv"
        return f"{base}/models/{self.model}/predict"


async def check_loopback(url: str) -> None:
    """Refuse a URL whose host resolves to any non-loopback address (no connection is made)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise LoadTestError(f"--url {url!r} has an invalid port: {exc}") from exc
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=0, proto=0)
    except OSError as exc:
        raise RemoteTargetRefused(
            f"cannot resolve host {host!r} of --url {url} ({exc}); check the URL"
        ) from exc
    remote = sorted({str(info[4][0]) for info in infos if not _is_loopback(str(info[4][0]))})
    if remote or not infos:
        raise RemoteTargetRefused(
            f"refusing to load-test {url}: host {host!r} resolves to non-loopback "
            f"address {', '.join(remote) or '(none)'}; a load test can take a shared server "
            "down, so pass --allow-remote if this target is yours to test"
        )


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
