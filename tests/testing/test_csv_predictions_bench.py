"""Tests for testing/csv_predictions_bench.py: it runs and reports every row, on a small file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ML.config import PROJECT_DIR

BENCH = PROJECT_DIR / "testing" / "csv_predictions_bench.py"


@pytest.mark.parametrize("quote_all", [False, True], ids=["plain", "quoted"])
def test_the_benchmark_reports_every_row(tmp_path: Path, quote_all: bool) -> None:
    csv_path = tmp_path / "iris.csv"
    command = [sys.executable, str(BENCH), "--rows", "3000", "--csv", str(csv_path)]
    done = subprocess.run(
        [*command, *(["--quote-all"] if quote_all else [])],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    report = json.loads(done.stdout)
    assert report["rows"] == 3000
    assert {"predict_csv_cpu_seconds", "training_read_cpu_seconds"} <= report.keys()
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 3001
    assert lines[1].startswith('"') is quote_all
