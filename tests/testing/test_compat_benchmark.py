"""Tests for the get_prediction workload of testing/benchmark.py (testing/compat_benchmark.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testing.benchmark import BenchmarkError, Workload, build_parser, options_from_args
from testing.benchmark_workload import TEST_CSV
from testing.compat_benchmark import CEILING, FASTML, REFERENCE, _rounds_table, compat_request
from testing.servers import PROJECT_DIR
from testing.wrk import WrkResult


def test_the_request_is_the_fast_ml_clients_multipart_upload() -> None:
    content_type, body = compat_request()
    boundary = content_type.removeprefix("multipart/form-data; boundary=")
    assert boundary != content_type
    assert TEST_CSV.read_bytes() in body
    assert b'name="target_variable"\r\n\r\nspecies\r\n' in body
    assert b'name="csv_file"; filename="test.csv"' in body
    assert body.endswith(f"--{boundary}--\r\n".encode())


def test_reference_goes_with_the_get_prediction_workload(tmp_path: Path) -> None:
    parser = build_parser()
    options = options_from_args(
        parser.parse_args(["--workload", "get_prediction", "--reference", str(PROJECT_DIR)])
    )
    assert options.workload is Workload.GET_PREDICTION and options.reference == PROJECT_DIR
    with pytest.raises(BenchmarkError, match="goes with --workload get_prediction"):
        options_from_args(parser.parse_args(["--reference", str(PROJECT_DIR)]))
    with pytest.raises(BenchmarkError, match="not a fastml checkout"):
        options_from_args(
            parser.parse_args(["--workload", "get_prediction", "--reference", str(tmp_path)])
        )


def result(rate: float) -> WrkResult:
    return WrkResult(requests_per_second=rate, p50_ms=1.0, p99_ms=2.0, requests=int(rate * 10))


def test_rounds_are_judged_against_their_own_ceiling_pass() -> None:
    rounds = [
        {FASTML: result(2100.0), REFERENCE: result(42.0), CEILING: result(8400.0)},
        {FASTML: result(1000.0), REFERENCE: result(40.0), CEILING: result(2000.0)},
    ]
    text = "\n".join(_rounds_table(rounds))
    assert (
        "| 1 | 2,100.0 (1.0 / 2.0) | 42.0 (1.0 / 2.0) | 8,400.0 (1.0 / 2.0) | 0.250 | 0.005 "
        in text
    )
    assert "| 10.0x | 50.0x | none |" in text
    assert (
        "| 2 | 1,000.0 (1.0 / 2.0) | 40.0 (1.0 / 2.0) | 2,000.0 (1.0 / 2.0) | 0.500 | 0.020 "
        in text
    )
    assert "fastml / ceiling median 0.375" in text
