"""The HTTP limits a connection must keep: sizes of a request's head and the time it may take."""

from __future__ import annotations

from dataclasses import dataclass

from ML.config import Settings


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
    def from_settings(cls, settings: Settings, **gunicorn_limits: float) -> HttpLimits:
        """The head size and deadlines come from `settings`; the worker passes gunicorn's
        own limits (request line, header count and size, keep-alive), which the gunicorn
        config read from the same settings."""
        return cls(
            **gunicorn_limits,  # type: ignore[arg-type]
            max_header_bytes=settings.limit_request_head_bytes,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            body_min_rate=settings.body_min_rate,
        )


# Where the worker's limits come from, for messages: gunicorn settings and their variables.
GUNICORN_SETTINGS = {
    "max_request_line": "limit_request_line (FASTML_LIMIT_REQUEST_LINE)",
    "max_header_count": "limit_request_fields (FASTML_LIMIT_REQUEST_FIELDS)",
    "max_header_field": "limit_request_field_size (FASTML_LIMIT_REQUEST_FIELD_SIZE)",
    "keep_alive_timeout": "keepalive (FASTML_KEEPALIVE)",
}
