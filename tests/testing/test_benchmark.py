"""Tests for the benchmark script (testing/benchmark.py) and the HTTP ceiling app."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from testing.benchmark import BenchmarkError, build_parser, options_from_args
from testing.benchmark_report import (
    NOTES_MARKER,
    ReportPathError,
    check_out_path,
    merge_with_notes,
    write_report,
)
from testing.ceiling_app import ANSWER, app
from testing.ceiling_pairs import Pair, summarize_pairs
from testing.wrk import (
    WrkResult,
    duration_ms,
    lua_string,
    parse_wrk_output,
    wrk_command,
    wrk_script,
)
from tests.testing.scripts import is_listening, run_script, started_urls

# Real wrk 4.1.0 output, captured with --latency against testing/ceiling_app.py and fastml.
WRK_CEILING_C16 = """\
Running 3s test @ http://127.0.0.1:18931/models/iris/predict
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.36ms    3.75ms  56.41ms   91.52%
    Req/Sec     5.30k     1.32k    8.55k    75.00%
  Latency Distribution
     50%    1.05ms
     75%    2.99ms
     90%    5.49ms
     99%   16.04ms
  31821 requests in 3.03s, 5.40MB read
Requests/sec:  10507.58
Transfer/sec:      1.78MB
"""

WRK_CEILING_C1_MICROSECONDS = """\
Running 2s test @ http://127.0.0.1:18931/models/iris/predict
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   601.15us    1.63ms  23.87ms   91.92%
    Req/Sec     6.97k     1.54k    9.42k    60.00%
  Latency Distribution
     50%   98.00us
     75%  148.00us
     90%    1.86ms
     99%    6.27ms
  13873 requests in 2.00s, 2.35MB read
Requests/sec:   6931.07
Transfer/sec:      1.18MB
"""

# fastml with a wrong password: 401, then 429 once failed logins are throttled.
WRK_FASTML_NON_2XX = """\
Running 3s test @ http://127.0.0.1:18932/models/iris/predict
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.76ms    7.23ms  77.90ms   82.00%
    Req/Sec   784.53    210.27     1.20k    61.67%
  Latency Distribution
     50%    9.58ms
     75%   12.98ms
     90%   17.87ms
     99%   40.94ms
  4737 requests in 3.03s, 1.76MB read
  Non-2xx or 3xx responses: 4737
Requests/sec:   1561.97
Transfer/sec:    593.48KB
"""

# fastml before its optimisation, 256 connections and --timeout 1s.
WRK_FASTML_TIMEOUTS = """\
Running 4s test @ http://127.0.0.1:18932/models/iris/predict
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   911.93ms  103.39ms 977.93ms   78.57%
    Req/Sec    38.33     47.84   222.00     88.37%
  Latency Distribution
     50%  968.80ms
     75%  971.12ms
     90%  977.26ms
     99%  977.93ms
  202 requests in 4.08s, 44.58KB read
  Socket errors: connect 0, read 0, write 0, timeout 174
Requests/sec:     49.48
Transfer/sec:     10.92KB
"""

# wrk pads durations in seconds with a trailing space: kept here as wrk printed it.
WRK_FASTML_SECONDS = "\n".join(
    [
        "Running 6s test @ http://127.0.0.1:18932/models/iris/predict",
        "  2 threads and 200 connections",
        "  Thread Stats   Avg      Stdev     Max   +/- Stdev",
        "    Latency     1.88s   878.25ms   4.02s    63.40%",
        "    Req/Sec    56.67     65.89   400.00     88.46%",
        "  Latency Distribution",
        "     50%    1.64s ",
        "     75%    2.71s ",
        "     90%    3.14s ",
        "     99%    3.77s ",
        "  530 requests in 6.15s, 116.97KB read",
        "Requests/sec:     86.12",
        "Transfer/sec:     19.01KB",
        "",
    ]
)


def wrk_result(rps: float, **kwargs: Any) -> WrkResult:
    return WrkResult(requests_per_second=rps, p50_ms=1.0, p99_ms=2.0, requests=100, **kwargs)


# -- wrk output --------------------------------------------------------------------------------


def test_parses_milliseconds() -> None:
    result = parse_wrk_output(WRK_CEILING_C16)
    assert result.requests_per_second == 10507.58
    assert result.p50_ms == pytest.approx(1.05)
    assert result.p99_ms == pytest.approx(16.04)
    assert result.requests == 31821
    assert not result.has_errors
    assert result.describe_errors() == "none"


def test_parses_microseconds() -> None:
    result = parse_wrk_output(WRK_CEILING_C1_MICROSECONDS)
    assert result.p50_ms == pytest.approx(0.098)
    assert result.p99_ms == pytest.approx(6.27)
    assert result.requests_per_second == 6931.07


def test_parses_seconds_with_trailing_spaces() -> None:
    result = parse_wrk_output(WRK_FASTML_SECONDS)
    assert result.p50_ms == pytest.approx(1640.0)
    assert result.p99_ms == pytest.approx(3770.0)
    assert result.requests == 530


def test_non_2xx_answers_are_errors() -> None:
    result = parse_wrk_output(WRK_FASTML_NON_2XX)
    assert result.non_2xx == 4737
    assert result.has_errors
    assert result.describe_errors() == "non-2xx 4737"


def test_socket_errors_are_errors() -> None:
    result = parse_wrk_output(WRK_FASTML_TIMEOUTS)
    assert result.socket_errors == {"connect": 0, "read": 0, "write": 0, "timeout": 174}
    assert result.non_2xx == 0
    assert result.has_errors
    assert result.describe_errors() == "timeout 174"
    assert result.p99_ms == pytest.approx(977.93)


def test_output_without_latency_distribution_is_refused() -> None:
    without = re.sub(r"  Latency Distribution\n(\s+\d+%.*\n)+", "", WRK_CEILING_C16)
    assert "Distribution" not in without
    with pytest.raises(ValueError, match="--latency"):
        parse_wrk_output(without)


def test_text_that_is_not_wrk_output_is_refused() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk_output("unable to connect to 127.0.0.1:18939 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("98.00us", 0.098),
        ("1.05ms", 1.05),
        ("1.64s", 1640.0),
        (" 3.77s ", 3770.0),
        ("2.00m", 120_000.0),
        ("1.00h", 3_600_000.0),
        ("7ms", 7.0),
    ],
)
def test_duration_units(text: str, expected: float) -> None:
    assert duration_ms(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "1.05", "ms", "1.05 ms", "1.05ns", "-1ms", "1,05ms"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a wrk duration"):
        duration_ms(text)


# -- pairs -------------------------------------------------------------------------------------


def test_median_pair_is_the_pair_with_the_middle_ratio() -> None:
    pairs = [
        Pair(wrk_result(100), wrk_result(1000)),  # 0.10
        Pair(wrk_result(300), wrk_result(1000)),  # 0.30
        Pair(wrk_result(100), wrk_result(500)),  # 0.20
    ]
    summary = summarize_pairs(pairs)
    assert summary.median is pairs[2]
    assert summary.ratio_min == pytest.approx(0.1)
    assert summary.ratio_max == pytest.approx(0.3)
    assert summary.pairs == tuple(pairs)


def test_median_of_an_even_count_is_the_lower_middle_pair() -> None:
    pairs = [Pair(wrk_result(rps), wrk_result(100)) for rps in (40, 10, 30, 20)]
    assert summarize_pairs(pairs).median is pairs[3]


def test_a_single_pair_is_its_own_median() -> None:
    pair = Pair(wrk_result(50), wrk_result(200))
    summary = summarize_pairs([pair])
    assert summary.median is pair
    assert summary.ratio_min == summary.ratio_max == pytest.approx(0.25)


def test_a_ceiling_that_answered_nothing_sorts_last() -> None:
    broken = Pair(wrk_result(50), wrk_result(0))
    good = Pair(wrk_result(50), wrk_result(100))
    assert math.isnan(broken.ratio)
    summary = summarize_pairs([broken, good])
    assert summary.median is good
    assert summary.ratio_min == summary.ratio_max == pytest.approx(0.5)


def test_errors_in_any_pass_flag_the_summary() -> None:
    clean = Pair(wrk_result(50), wrk_result(100))
    failing = Pair(wrk_result(50), wrk_result(100, socket_errors={"timeout": 1}))
    assert not summarize_pairs([clean]).has_errors
    assert failing.has_errors
    assert summarize_pairs([clean, failing]).has_errors


def test_no_pairs_is_refused() -> None:
    with pytest.raises(ValueError, match="--pairs"):
        summarize_pairs([])


# -- the report file ---------------------------------------------------------------------------


def test_a_new_report_ends_with_the_marker() -> None:
    merged = merge_with_notes("# report\n\n| a |\n", None)
    assert merged == f"# report\n\n| a |\n\n{NOTES_MARKER}\n"


def test_notes_below_the_marker_are_kept_and_the_rest_replaced() -> None:
    notes = "\n\n## Notes\n\nThe c=64 dip is the machine, see pair 2.\n"
    existing = f"# old report\n\nold table\n\n{NOTES_MARKER}{notes}"
    merged = merge_with_notes("# new report\n", existing)
    assert merged == f"# new report\n\n{NOTES_MARKER}{notes}"
    assert "old table" not in merged
    # Running again changes nothing below the marker.
    assert merge_with_notes("# new report\n", merged) == merged


def test_a_marker_at_the_very_end_gets_a_final_newline() -> None:
    assert merge_with_notes("# new", f"old\n{NOTES_MARKER}") == f"# new\n\n{NOTES_MARKER}\n"


def test_write_report_keeps_notes_and_creates_folders(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "benchmarks.md"
    write_report(path, "# first\n")
    with path.open("a", encoding="utf-8") as file:
        file.write("hand-written note\n")
    write_report(path, "# second\n")
    assert path.read_text() == f"# second\n\n{NOTES_MARKER}\nhand-written note\n"
    assert [p.name for p in path.parent.iterdir()] == ["benchmarks.md"]


def test_out_path_without_the_marker_is_refused_before_the_run(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("precious notes\n")
    with pytest.raises(ReportPathError, match="would be lost"):
        check_out_path(path)
    path.write_text(f"report\n{NOTES_MARKER}\nnotes\n")
    check_out_path(path)
    check_out_path(tmp_path / "new" / "folder" / "bench.md")
    with pytest.raises(ReportPathError, match="is a folder"):
        check_out_path(tmp_path)


# -- options and wrk commands ------------------------------------------------------------------


def test_quick_means_two_seconds_and_one_pair_unless_given() -> None:
    quick = options_from_args(build_parser().parse_args(["--quick"]))
    assert (quick.duration, quick.pairs, quick.workers) == (2, 1, 2)
    given = options_from_args(build_parser().parse_args(["--quick", "--pairs", "2"]))
    assert (given.duration, given.pairs) == (2, 2)
    default = options_from_args(build_parser().parse_args([]))
    assert (default.duration, default.pairs) == (10, 3)
    with pytest.raises(BenchmarkError, match="--duration must be at least 1"):
        options_from_args(build_parser().parse_args(["--duration", "0"]))


def test_wrk_command_uses_one_thread_for_one_connection() -> None:
    one = wrk_command("wrk", "http://127.0.0.1:1/x", 1, 10, "post.lua")
    many = wrk_command("wrk", "http://127.0.0.1:1/x", 64, 10, "post.lua")
    assert one[1:4] == ["-t1", "-c1", "-d10s"]
    assert many[1:4] == ["-t2", "-c64", "-d10s"]
    assert "--latency" in many
    assert many[-3:] == ["-s", "post.lua", "http://127.0.0.1:1/x"]


def test_lua_strings_escape_quotes_backslashes_and_non_ascii() -> None:
    assert lua_string('{"a":1}') == '"{\\034a\\034:1}"'
    assert lua_string("a\\b\n\u00e9") == '"a\\092b\\010\\195\\169"'


def test_wrk_script_posts_the_body_with_the_headers() -> None:
    script = wrk_script('{"rows":[]}', {"Content-Type": "application/json"})
    assert script.splitlines() == [
        'wrk.method = "POST"',
        'wrk.body = "{\\034rows\\034:[]}"',
        'wrk.headers["Content-Type"] = "application/json"',
    ]


# -- the ceiling app ---------------------------------------------------------------------------


def run_asgi(scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drive the app with the ASGI messages `incoming`; returns what it sent."""
    sent: list[dict[str, Any]] = []
    queue = list(incoming)

    async def receive() -> dict[str, Any]:
        assert queue, "the app asked for more messages than the client sends"
        return queue.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=10))
    assert queue == [], "the app did not read every message"
    return sent


def test_ceiling_reads_the_whole_body_then_answers_a_prediction() -> None:
    body = [
        {"type": "http.request", "body": b'{"rows":', "more_body": True},
        {"type": "http.request", "body": b"[{}]}", "more_body": False},
    ]
    sent = run_asgi({"type": "http", "method": "POST", "path": "/anything"}, body)
    assert sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(ANSWER)
    assert json.loads(sent[1]["body"]) == {"model": "iris", "version": 1, "predictions": ["setosa"]}
    assert sent[1]["body"] == ANSWER


def test_ceiling_sends_nothing_to_a_client_that_left() -> None:
    sent = run_asgi({"type": "http"}, [{"type": "http.disconnect"}])
    assert sent == []


def test_ceiling_answers_the_lifespan_protocol() -> None:
    sent = run_asgi(
        {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- the whole benchmark, quick ----------------------------------------------------------------


@pytest.mark.system
@pytest.mark.timeout(320)
def test_quick_benchmark_writes_the_report_and_stops_both_servers(tmp_path: Path) -> None:
    # Not a skip: scripts/test installs wrk (as root, as in CI); nothing here installs it.
    assert shutil.which("wrk"), "wrk is not on PATH; install it: sudo apt-get install -y wrk"
    out_path = tmp_path / "bench.md"
    out_path.write_text(f"old\n{NOTES_MARKER}\nkept note\n")
    completed = run_script(["testing/benchmark.py", "--quick", "--out", str(out_path)])
    report = out_path.read_text()
    for heading in ("## HTTP", "## Our load client", "## In-process model cost"):
        assert heading in report
    for concurrency in (1, 16, 64):
        assert re.search(rf"^\| {concurrency} \| [\d.]+ \|", report, re.MULTILINE), report
    for rows in (1, 8, 64, 512):
        assert re.search(rf"^\| {rows} \| [\d,.]+ \|", report, re.MULTILINE), report
    assert "| async_predictions | predict |" in report
    assert report.endswith(f"{NOTES_MARKER}\nkept note\n")
    assert "old\n" not in report
    urls = started_urls(completed.stderr)
    assert len(urls) == 2, completed.stderr
    assert not any(is_listening(url) for url in urls)
