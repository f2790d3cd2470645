"""Tests for testing/jobs_throughput.py: its arithmetic, its data, and a tiny real run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testing.jobs_throughput import (
    SECTION_END,
    SECTION_START,
    ThroughputError,
    combine,
    worker_counts,
    write_large_csv,
)
from tests.testing.scripts import is_listening, run_script, started_urls


def test_combine_is_the_scaled_delta_per_command_without_the_unchanged() -> None:
    before = {"hset": 10.0, "get": 5.0, "ping": 1.0}
    after = {"hset": 16.0, "get": 5.0, "lpush": 2.0, "ping": 1.0}
    assert combine(after, before) == {"hset": 6.0, "lpush": 2.0}
    assert combine(after, before, 0.5) == {"hset": 3.0, "lpush": 1.0}


def test_worker_counts_are_positive_integers() -> None:
    assert worker_counts("1,2") == (1, 2)
    assert worker_counts("3") == (3,)
    for bad in ("", "0", "1,x", "-1"):
        with pytest.raises(ThroughputError, match="--workers"):
            worker_counts(bad)


def test_the_large_csv_is_seeded(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_large_csv(first, 300)
    write_large_csv(second, 300)
    lines = first.read_text().splitlines()
    assert lines[0] == "a,b,c,d,label"
    assert len(lines) == 301
    assert {line.rsplit(",", 1)[1] for line in lines[1:]} == {"k0", "k1", "k2"}
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.system
@pytest.mark.timeout(320)
def test_two_iris_jobs_on_one_worker_write_the_section_and_stop_everything(
    tmp_path: Path,
) -> None:
    out_path = tmp_path / "bench.md"
    out_path.write_text("# kept heading\n\nkept text\n")
    completed = run_script(
        [
            "testing/jobs_throughput.py",
            *("--workers", "1", "--iris-jobs", "2", "--large-jobs", "0"),
            *("--out", str(out_path)),
        ]
    )
    text = out_path.read_text()
    assert text.startswith("# kept heading\n\nkept text\n\n" + SECTION_START)
    assert text.endswith(SECTION_END + "\n")
    row = re.search(
        r"^\| iris \| 105 \| 1 \| 2 \| ([\d.]+) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \| (-?\d+) "
        r"\| -?[\d,]+ \| .* \| none \|$",
        text,
        re.MULTILINE,
    )
    assert row, text
    wall, per_minute = float(row.group(1)), float(row.group(2))
    # Both are printed to 0.1: the rate comes from the unrounded wall time.
    assert 2 / (wall + 0.05) * 60 - 0.05 <= per_minute <= 2 / (wall - 0.05) * 60 + 0.05
    # Each job writes its record and its message through Redis: some commands are counted.
    assert int(row.group(4)) > 0, text
    # Training forks a process per job on the worker: its CPU time is counted.
    assert float(row.group(3)) > 0, text
    urls = started_urls(completed.stderr)
    assert len(urls) == 2, completed.stderr
    assert not any(is_listening(url) for url in urls)
