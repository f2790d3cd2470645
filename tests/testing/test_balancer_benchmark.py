"""Tests for `testing/benchmark.py --through-nginx` (testing/balancer_benchmark.py)."""

from __future__ import annotations

import datetime
import re
import shutil
from pathlib import Path

import pytest

from testing.balancer_benchmark import SECTION_END, SECTION_START, format_section
from testing.benchmark import BenchmarkError, build_parser, options_from_args
from testing.benchmark_report import NOTES_MARKER
from testing.ceiling_pairs import Pair, summarize_pairs
from testing.wrk import WrkResult
from tests.testing.scripts import is_listening, run_script, started_urls


def wrk(rps: float, **kwargs: object) -> WrkResult:
    return WrkResult(requests_per_second=rps, p50_ms=1.0, p99_ms=2.0, requests=int(rps), **kwargs)  # type: ignore[arg-type]


def test_through_nginx_is_a_run_of_its_own() -> None:
    options = options_from_args(build_parser().parse_args(["--through-nginx", "--quick"]))
    assert options.through_nginx
    assert (options.duration, options.pairs) == (2, 1)
    assert not options_from_args(build_parser().parse_args([])).through_nginx
    for other in (["--estimators", "all"], ["--workload", "get_prediction"]):
        with pytest.raises(BenchmarkError, match="run of its own"):
            options_from_args(build_parser().parse_args(["--through-nginx", *other]))


def test_the_section_shows_the_median_pair_and_the_errors_of_any_pass() -> None:
    summaries = {
        16: summarize_pairs([Pair(wrk(900), wrk(1000)), Pair(wrk(400), wrk(1000))]),
        64: summarize_pairs([Pair(wrk(1200), wrk(1000, socket_errors={"timeout": 3}))]),
    }
    started = datetime.datetime(2026, 11, 28, 10, 0, tzinfo=datetime.UTC)
    loads = ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    section = format_section(
        "python testing/benchmark.py --through-nginx", started, loads, 2, 10, summaries
    )
    assert "| 16 | 400 | 1.00 | 2.00 | 1000 | 1.00 | 2.00 | 0.40 (0.40-0.90) | none |" in section
    assert "| 64 | 1200 |" in section
    assert "| 1.20 (1.20-1.20) | direct timeout 3 |" in section
    assert "1.00 / 2.00 / 3.00 at the start and 4.00 / 5.00 / 6.00 at the end" in section


@pytest.mark.system
@pytest.mark.timeout(320)
def test_quick_run_through_nginx_writes_its_section_and_stops_everything(
    tmp_path: Path,
) -> None:
    # Not a skip: scripts/test installs wrk and nginx (as root, as in CI).
    assert shutil.which("wrk"), "wrk is not on PATH; install it: sudo apt-get install -y wrk"
    out_path = tmp_path / "bench.md"
    # As for --estimators, an existing --out must have the report's notes marker.
    out_path.write_text(f"# kept\n{NOTES_MARKER}\n")
    completed = run_script(
        ["testing/benchmark.py", "--through-nginx", "--quick", "--out", str(out_path)]
    )
    text = out_path.read_text()
    assert text.startswith(f"# kept\n{NOTES_MARKER}\n\n{SECTION_START}\n### Through nginx: 2")
    assert text.endswith(f"{SECTION_END}\n")
    for concurrency in (16, 64):
        passes = r"\d+ \| [\d.]+ \| [\d.]+ \| \d+ \| [\d.]+ \| [\d.]+"
        row = rf"^\| {concurrency} \| {passes} \| [\d.]+ \([\d.]+-[\d.]+\) \| none \|$"
        assert re.search(row, text, re.MULTILINE), text
    urls = started_urls(completed.stderr)
    assert len(urls) == 2, completed.stderr  # the direct server and nginx
    assert not any(is_listening(url) for url in urls)
