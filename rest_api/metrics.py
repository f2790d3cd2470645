"""Prometheus metrics, correct under several gunicorn workers (multiprocess mode).

gunicorn/gunicorn-config.py sets PROMETHEUS_MULTIPROC_DIR before workers import this
module; each worker then writes its samples to files there and /metrics sums them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

HTTP_REQUESTS = Counter(
    "fastml_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "fastml_http_request_duration_seconds",
    "Time from request start to the end of the answer.",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PREDICTED_ROWS = Counter("fastml_predicted_rows_total", "Rows predicted.", ["model"])
TRAINING_JOBS = Counter("fastml_training_jobs_submitted_total", "Training jobs accepted.")


class RequestMetrics:
    """Request counters with their label children cached: `labels()` costs more than `inc()`."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        latency = self._latencies.get((method, route))
        if latency is None:
            latency = HTTP_LATENCY.labels(method, route)
            self._latencies[(method, route)] = latency
        latency.observe(seconds)


_predicted_rows_by_model: dict[str, Any] = {}


def count_predicted_rows(model: str, rows: int) -> None:
    counter = _predicted_rows_by_model.get(model)
    if counter is None:
        counter = _predicted_rows_by_model[model] = PREDICTED_ROWS.labels(model)
    counter.inc(rows)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of every worker's samples (or this process's, outside gunicorn)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
