"""Request metrics are counted in memory and written in batches; /metrics shows them whole."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from rest_api.metrics import HTTP_LATENCY, HTTP_REQUESTS, LATENCY_BUCKETS, PendingMetrics

LATENCIES = [0.0001, 0.0005, 0.0007, 0.003, 0.2, 31.0, 5.0]


def sample(metric: object, name: str, labels: dict[str, str]) -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def test_batched_latencies_equal_histogram_observe() -> None:
    pending = PendingMetrics()
    for seconds in LATENCIES:
        pending.observe_request("GET", "/test/batched", 200, seconds)  # no loop: at once
    asyncio.run(_observe_in_a_loop(pending))

    registry = CollectorRegistry()
    reference = Histogram("reference", "same buckets", buckets=LATENCY_BUCKETS, registry=registry)
    for seconds in LATENCIES * 2:
        reference.observe(seconds)
    expected = {
        found.labels["le"]: found.value
        for family in registry.collect()
        for found in family.samples
        if found.name == "reference_bucket"
    }
    labels = {"method": "GET", "route": "/test/batched"}
    for bound, count in expected.items():
        assert (
            sample(
                HTTP_LATENCY, "fastml_http_request_duration_seconds_bucket", {**labels, "le": bound}
            )
            == count
        )
    assert sample(HTTP_LATENCY, "fastml_http_request_duration_seconds_sum", labels) == sum(
        LATENCIES * 2
    )
    assert sample(HTTP_REQUESTS, "fastml_http_requests_total", {**labels, "status": "200"}) == 14
    assert b"fastml_http_requests_total" in generate_latest()


async def _observe_in_a_loop(pending: PendingMetrics) -> None:
    for seconds in LATENCIES:
        pending.observe_request("GET", "/test/batched", 200, seconds)
    labels = {"method": "GET", "route": "/test/batched", "status": "200"}
    assert sample(HTTP_REQUESTS, "fastml_http_requests_total", labels) == 7  # not written yet
    pending.close()
