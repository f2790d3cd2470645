"""Tests for the latency histogram and the load-test report (testing/load_report.py)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from testing.load_report import LatencyHistogram, LoadReport, save_json, save_plot

# Geometric bucket middle: at most half a 1 % bucket away from the true value.
RESOLUTION = 0.006
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def lognormal_latencies(size: int, seed: int = 7) -> np.ndarray:
    """Seconds, median ~5 ms, with the long right tail real latencies have."""
    return np.random.default_rng(seed).lognormal(mean=math.log(0.005), sigma=0.8, size=size)


def make_report(histogram: LatencyHistogram) -> LoadReport:
    return LoadReport(
        url="http://127.0.0.1:8000/models/iris/predict",
        payload="json",
        concurrency=8,
        requests_planned=histogram.count + 3,
        requests_sent=histogram.count + 2,
        statuses={200: histogram.count - 1, 401: 1} if histogram.count else {},
        client_errors={"timeout": 2},
        wall_seconds=2.0,
        latency=histogram,
    )


@pytest.mark.parametrize("q", [1, 10, 50, 90, 99, 99.9])
def test_percentiles_match_numpy_within_bucket_resolution(q: float) -> None:
    samples = lognormal_latencies(100_000)
    histogram = LatencyHistogram()
    histogram.record_many(samples)

    expected = float(np.percentile(samples, q, method="inverted_cdf"))
    assert histogram.percentile(q) == pytest.approx(expected, rel=RESOLUTION)


def test_record_one_by_one_equals_record_many() -> None:
    samples = np.concatenate([lognormal_latencies(5_000), [0.0, 1e-7, 10e-6, 59.9, 60.0, 3600.0]])
    one_by_one, at_once = LatencyHistogram(), LatencyHistogram()
    for value in samples:
        one_by_one.record(float(value))
    at_once.record_many(samples)

    assert np.array_equal(one_by_one.counts, at_once.counts)
    assert one_by_one.count == at_once.count == samples.size
    assert one_by_one.mean == pytest.approx(at_once.mean)


def test_known_sample_and_exact_extremes() -> None:
    histogram = LatencyHistogram()
    for seconds in [0.001] * 90 + [0.010] * 9 + [0.1234567]:
        histogram.record(seconds)

    assert histogram.percentile(50) == pytest.approx(0.001, rel=RESOLUTION)
    assert histogram.percentile(90) == pytest.approx(0.001, rel=RESOLUTION)
    assert histogram.percentile(99) == pytest.approx(0.010, rel=RESOLUTION)
    assert histogram.percentile(99.9) == histogram.max == 0.1234567
    assert histogram.percentile(100) == 0.1234567
    assert histogram.percentile(0) == histogram.min == 0.001
    assert histogram.count == 100


def test_values_outside_the_bucket_range_keep_exact_min_and_max() -> None:
    histogram = LatencyHistogram()
    histogram.record(2e-6)
    histogram.record(7200.0)

    assert histogram.percentile(0) == 2e-6
    assert histogram.percentile(100) == histogram.max == 7200.0
    assert histogram.count == 2


@pytest.mark.parametrize("bad", [-0.001, math.nan])
def test_negative_or_nan_latency_is_refused(bad: float) -> None:
    histogram = LatencyHistogram()
    with pytest.raises(ValueError, match="seconds >= 0"):
        histogram.record(bad)
    with pytest.raises(ValueError, match="seconds >= 0"):
        histogram.record_many(np.array([0.1, bad]))
    assert histogram.count == 0


def test_percentile_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        LatencyHistogram().percentile(101)


def test_empty_histogram_has_no_statistics() -> None:
    histogram = LatencyHistogram()
    assert histogram.count == 0
    assert math.isnan(histogram.percentile(50))
    assert math.isnan(histogram.max)


def test_memory_does_not_grow_with_the_number_of_samples() -> None:
    histogram = LatencyHistogram()
    size_before = histogram.counts.nbytes
    attributes_before = set(vars(histogram))

    for _ in range(10):
        histogram.record_many(lognormal_latencies(100_000))
    for value in lognormal_latencies(10_000).tolist():
        histogram.record(value)

    assert histogram.count == 1_010_000
    assert histogram.counts.nbytes == size_before < 16_000
    assert set(vars(histogram)) == attributes_before


def test_merge_equals_one_histogram_of_all_samples() -> None:
    samples = lognormal_latencies(20_000)
    whole, first, second = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    whole.record_many(samples)
    first.record_many(samples[:7_000])
    second.record_many(samples[7_000:])

    first.merge(second)

    assert np.array_equal(first.counts, whole.counts)
    assert first.count == whole.count
    assert first.max == whole.max
    assert first.min == whole.min
    for q in (50, 99, 99.9):
        assert first.percentile(q) == whole.percentile(q)


def test_merge_refuses_a_different_bucket_layout() -> None:
    with pytest.raises(ValueError, match="different buckets"):
        LatencyHistogram().merge(LatencyHistogram(ratio=1.05))


def test_histogram_survives_a_dict_round_trip() -> None:
    histogram = LatencyHistogram()
    histogram.record_many(lognormal_latencies(3_000))

    copy = LatencyHistogram.from_dict(json.loads(json.dumps(histogram.to_dict())))

    assert np.array_equal(copy.counts, histogram.counts)
    assert (copy.count, copy.min, copy.max) == (histogram.count, histogram.min, histogram.max)
    assert copy.percentile(99) == histogram.percentile(99)


def test_report_counts_and_success() -> None:
    histogram = LatencyHistogram()
    histogram.record_many(lognormal_latencies(100))
    report = make_report(histogram)

    assert report.answers == 100
    assert report.errors == 2
    assert report.throughput == 50.0
    assert not report.is_success
    ok = LoadReport("u", "json", 1, 3, 3, statuses={200: 2, 204: 1}, latency=histogram)
    assert ok.is_success


def test_format_text_names_every_figure() -> None:
    histogram = LatencyHistogram()
    histogram.record_many(lognormal_latencies(100))

    text = make_report(histogram).format_text()

    for expected in (
        "requests sent    102 of 103",
        "200: 99",
        "401: 1",
        "timeout: 2",
        "throughput       50.0 req/s",
        "p50 ",
        "p99.9 ",
        "max ",
        "FAILED",
    ):
        assert expected in text


def test_save_json_writes_the_counts_and_percentiles(tmp_path: Path) -> None:
    histogram = LatencyHistogram()
    histogram.record_many(lognormal_latencies(1_000))
    path = tmp_path / "report.json"

    save_json(make_report(histogram), path)

    data = json.loads(path.read_text())
    assert data["statuses"] == {"200": 999, "401": 1}
    assert data["client_errors"] == {"timeout": 2}
    assert data["requests_sent"] == 1_002
    assert data["success"] is False
    assert data["latency_ms"]["p99.9"] == pytest.approx(histogram.percentile(99.9) * 1000)
    assert data["latency_ms"]["max"] == histogram.max * 1000
    assert sum(count for _, count in data["latency_histogram"]["buckets"]) == 1_000


def test_save_json_of_an_empty_run_writes_null_latencies(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"

    save_json(make_report(LatencyHistogram()), path)

    assert json.loads(path.read_text())["latency_ms"]["p50"] is None


@pytest.mark.parametrize("samples", [lognormal_latencies(5_000), np.array([]), np.array([0.0])])
def test_save_plot_writes_a_png(tmp_path: Path, samples: np.ndarray) -> None:
    histogram = LatencyHistogram()
    histogram.record_many(samples)
    path = tmp_path / "latency.png"

    save_plot(make_report(histogram), path)

    assert path.read_bytes()[:8] == PNG_MAGIC


def test_merged_reports_add_up_and_keep_exact_percentiles() -> None:
    """What --processes does: the merged report is the one a single client would have made."""
    samples = lognormal_latencies(30_000)
    whole = LatencyHistogram()
    whole.record_many(samples)
    parts = []
    for index, (chunk, reason) in enumerate(
        zip(np.array_split(samples, 3), ("completed", "duration", "completed"), strict=True)
    ):
        histogram = LatencyHistogram()
        histogram.record_many(chunk)
        parts.append(
            LoadReport(
                url="http://127.0.0.1:8000/models/iris/predict",
                payload="json",
                concurrency=8,
                requests_planned=10_000,
                requests_sent=len(chunk) + index,
                statuses={200: len(chunk) - index, 429: index},
                client_errors={"timeout": index} if index else {},
                wall_seconds=2.0 + index,
                rate=100.0,
                late=index,
                stop_reason=reason,
                latency=histogram,
                notes=["credentials refused"] if index else [],
            )
        )

    merged = LoadReport.merged(parts)

    assert np.array_equal(merged.latency.counts, whole.counts)
    assert (merged.latency.count, merged.latency.min, merged.latency.max) == (
        whole.count,
        whole.min,
        whole.max,
    )
    assert math.isclose(merged.latency.mean, whole.mean, rel_tol=1e-12)
    for q in (50, 90, 99, 99.9):
        assert merged.latency.percentile(q) == whole.percentile(q)
        exact = float(np.percentile(samples, q, method="inverted_cdf"))
        assert abs(merged.latency.percentile(q) - exact) <= RESOLUTION * exact
    assert merged.statuses == {200: 30_000 - 3, 429: 3}
    assert merged.client_errors == {"timeout": 3}
    assert (merged.requests_planned, merged.requests_sent) == (30_000, 30_003)
    assert (merged.concurrency, merged.rate, merged.late) == (24, 300.0, 3)
    assert merged.wall_seconds == 4.0  # they ran side by side: the longest one
    assert merged.stop_reason == "duration"
    assert merged.notes == ["credentials refused"]
    # The inputs are left as they were.
    assert parts[0].latency.count == 10_000 and parts[0].statuses == {200: 10_000, 429: 0}


def test_merging_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no reports"):
        LoadReport.merged([])


def test_notes_are_in_the_text_and_the_json(tmp_path: Path) -> None:
    report = LoadReport("u", "json", 1, 1, 1, statuses={401: 1}, notes=["wrong password"])
    assert "note             wrong password" in report.format_text()
    save_json(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == ["wrong password"]
