"""Tests for `testing/benchmark.py --estimators` (testing/estimators_benchmark.py)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from ML.estimators import ESTIMATORS
from testing.benchmark import BenchmarkError, build_parser, options_from_args
from testing.benchmark_report import NOTES_MARKER
from testing.estimators_benchmark import (
    SECTION_END,
    SECTION_START,
    InProcessCost,
    Round,
    format_section,
    write_section,
)
from testing.wrk import WrkResult


def wrk(rps: float, **kwargs: object) -> WrkResult:
    return WrkResult(requests_per_second=rps, p50_ms=1.0, p99_ms=2.0, requests=int(rps), **kwargs)  # type: ignore[arg-type]


def test_estimators_option_takes_all_or_registry_names() -> None:
    every = options_from_args(build_parser().parse_args(["--estimators", "all"]))
    assert every.estimators == tuple(ESTIMATORS)
    assert (every.duration, every.pairs) == (3, 2)
    some = options_from_args(build_parser().parse_args(["--estimators", "svc, knn"]))
    assert some.estimators == ("svc", "knn")
    assert options_from_args(build_parser().parse_args([])).estimators == ()
    with pytest.raises(BenchmarkError, match="names from: random_forest"):
        options_from_args(build_parser().parse_args(["--estimators", "svc,boosted_cats"]))


def section(measured: dict[str, list[Round]]) -> str:
    costs = {name: InProcessCost(1000.0, 50.0, 20.0, "CompiledForest") for name in measured}
    started = datetime.datetime(2026, 11, 28, 7, 0, tzinfo=datetime.UTC)
    return format_section("python testing/benchmark.py --estimators all", started, 3, 2,
                          measured, costs, (1.0, 2.0, 3.0))  # fmt: skip


def row_of(text: str, estimator: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {estimator} |"))


def test_section_judges_each_estimator_against_naive_or_the_forest() -> None:
    text = section(
        {
            "random_forest": [Round(wrk(5000), wrk(100), wrk(15000))] * 2,
            "logistic_regression": [Round(wrk(4500), wrk(1000), wrk(15000))] * 2,
            "svc": [Round(wrk(900), wrk(300), wrk(15000))] * 2,
            "knn": [Round(wrk(3000), wrk(250), wrk(15000))] * 2,
        }
    )
    assert "2026-11-28 07:00 UTC" in text
    assert "| 50.0 (50.0-50.0) |" in row_of(text, "random_forest")
    assert "yes: >= 10x naive" in row_of(text, "random_forest")
    assert "yes: >= 0.8 of forest" in row_of(text, "logistic_regression")
    assert "**no**" in row_of(text, "svc")  # 3x naive, 0.18 of the forest
    assert "yes: >= 10x naive" in row_of(text, "knn")


def test_the_forest_criterion_is_only_for_models_cheap_enough_for_a_naive_route() -> None:
    text = section(
        {
            "random_forest": [Round(wrk(5000), wrk(100), wrk(15000))],
            "hist_gradient_boosting": [Round(wrk(4500), wrk(900), wrk(15000))],
        }
    )
    assert "**no**" in row_of(text, "hist_gradient_boosting")


def test_section_shows_the_spread_and_errors_of_the_rounds() -> None:
    rounds = [
        Round(wrk(5000), wrk(100), wrk(15000)),
        Round(wrk(6000), wrk(100), wrk(15000)),
        Round(wrk(4000), wrk(100, non_2xx=3), wrk(15000)),
    ]
    row = row_of(section({"random_forest": rounds}), "random_forest")
    assert "| 50.0 (40.0-60.0) |" in row
    assert "naive non-2xx 3" in row


def test_write_section_appends_once_then_replaces_in_place(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# report\n\n{NOTES_MARKER}\nnote one\n")
    write_section(path, "first table\n")
    assert path.read_text().endswith(f"note one\n\n{SECTION_START}\nfirst table\n{SECTION_END}\n")
    path.write_text(path.read_text() + "\nnote two\n")
    write_section(path, "second table\n")
    text = path.read_text()
    assert "first table" not in text
    assert text.count(SECTION_START) == 1
    assert text.index("note one") < text.index("second table") < text.index("note two")
