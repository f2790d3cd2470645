"""Prometheus metrics, correct under several gunicorn workers (multiprocess mode).

gunicorn/gunicorn-config.py sets PROMETHEUS_MULTIPROC_DIR before workers import this
module; each worker then writes its samples to files there and /metrics sums them.
"""

from __future__ import annotations

import asyncio
import bisect
import os

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
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
HTTP_LATENCY = Histogram(
    "fastml_http_request_duration_seconds",
    "Time from request start to the end of the answer.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
PREDICTED_ROWS = Counter("fastml_predicted_rows_total", "Rows predicted.", ["model"])
TRAINING_JOBS = Counter("fastml_training_jobs_submitted_total", "Training jobs accepted.")


FLUSH_SECONDS = 0.2


class PendingMetrics:
    """This worker's request counts, latencies and predicted rows, gathered in memory and
    written to the Prometheus values at most every FLUSH_SECONDS (and before /metrics
    renders). Under gunicorn each Prometheus write takes a lock and an mmap write; counting
    in a dict first costs the hot path a dict update instead of four of those per request.
    """

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        # (method, route) -> [sum of seconds, count in bucket 0, count in bucket 1, ...]
        self._latencies: dict[tuple[str, str], list[float]] = {}
        self._rows: dict[str, int] = {}
        self._flush_handle: asyncio.TimerHandle | None = None

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        latency = self._latencies.get((method, route))
        if latency is None:
            # the sum, then one count per bucket and the +Inf bucket
            latency = self._latencies[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        latency[0] += seconds
        # The bucket Histogram.observe picks: the first upper bound >= seconds.
        latency[1 + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # past 30 s: +Inf
        self._schedule_flush()

    def count_predicted_rows(self, model: str, rows: int) -> None:
        self._rows[model] = self._rows.get(model, 0) + rows
        self._schedule_flush()

    def flush(self) -> None:
        self._flush_handle = None
        requests, self._requests = self._requests, {}
        latencies, self._latencies = self._latencies, {}
        rows, self._rows = self._rows, {}
        for (method, route, status), count in requests.items():
            HTTP_REQUESTS.labels(method, route, str(status)).inc(count)
        for (method, route), (total, *bucket_counts) in latencies.items():
            # Histogram has no "observe many": add to its sum and buckets as observe does.
            histogram = HTTP_LATENCY.labels(method, route)
            histogram._sum.inc(total)
            for bucket, in_bucket in zip(histogram._buckets, bucket_counts, strict=True):
                if in_bucket:
                    bucket.inc(in_bucket)
        for model, predicted in rows.items():
            PREDICTED_ROWS.labels(model).inc(predicted)

    def close(self) -> None:
        """Write what is pending and forget the timer (its event loop is ending)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # outside an event loop (a test, a script): write at once
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_SECONDS, self.flush)


# One per process: the request log middleware and the routes add to it, /metrics flushes it.
PENDING = PendingMetrics()


def count_predicted_rows(model: str, rows: int) -> None:
    PENDING.count_predicted_rows(model, rows)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of every worker's samples (or this process's, outside gunicorn)."""
    PENDING.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
