"""The HTTP limits a connection must keep: sizes of a request's head and the time it may take."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpLimits:
    """What `rest_api.http_protocol` enforces on every connection.

    The sizes default to gunicorn's own limits (gunicorn's settings feed them in
    `rest_api.worker`); the times follow Apache's mod_reqtimeout: headers must arrive within
    a deadline, and a body gets a grace period extended by one second per `body_min_rate`
    bytes received, so a client that keeps a modest pace is never cut off.
    """

    max_request_line: int = 8190
    """Bytes of the request target (path and query)."""
    max_header_count: int = 100
    max_header_field: int = 8190
    """Bytes of one header line, name and value."""
    max_header_bytes: int = 32768
    """Bytes of the whole head: request line and every header line."""
    header_timeout: float = 10.0
    """Seconds from a request's first byte to the end of its headers."""
    body_timeout: float = 20.0
    """Seconds a body may take before `body_min_rate` applies."""
    body_min_rate: float = 500.0
    """Bytes per second a body must average after `body_timeout`."""
    keep_alive_timeout: float = 5.0
    """Seconds a connection may sit idle (before its first request or between requests)."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                setting = GUNICORN_SETTINGS.get(name, name)
                raise ValueError(f"HTTP limit {setting} must be greater than 0; got {value}")

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] = os.environ, **gunicorn_limits: float
    ) -> HttpLimits:
        """The limits gunicorn has no setting for come from FASTML_* variables; the worker
        passes gunicorn's own (request line, header count and size, keep-alive)."""
        read = {
            field: _positive_number(environ, variable, kind)
            for field, (variable, kind) in ENVIRONMENT_VARIABLES.items()
            if variable in environ
        }
        return cls(**gunicorn_limits, **read)  # type: ignore[arg-type]


# Where the worker's limits come from, for messages: gunicorn settings and their variables.
GUNICORN_SETTINGS = {
    "max_request_line": "limit_request_line (FASTML_LIMIT_REQUEST_LINE)",
    "max_header_count": "limit_request_fields (FASTML_LIMIT_REQUEST_FIELDS)",
    "max_header_field": "limit_request_field_size (FASTML_LIMIT_REQUEST_FIELD_SIZE)",
    "keep_alive_timeout": "keepalive (FASTML_KEEPALIVE)",
}
ENVIRONMENT_VARIABLES: dict[str, tuple[str, type[int] | type[float]]] = {
    "max_header_bytes": ("FASTML_LIMIT_REQUEST_HEAD_BYTES", int),
    "header_timeout": ("FASTML_HEADER_TIMEOUT", float),
    "body_timeout": ("FASTML_BODY_TIMEOUT", float),
    "body_min_rate": ("FASTML_BODY_MIN_RATE", float),
}


def _positive_number(environ: Mapping[str, str], variable: str, kind: type[float]) -> float:
    text = environ[variable]
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        unit = "a whole number" if kind is int else "a number"
        raise ValueError(f"{variable} must be {unit} greater than 0; got {text!r}")
    return value
