"""Tests for testing/training_cost.py: it fits what the server fits, and runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ML.config import PROJECT_DIR
from ML.estimators import build_estimator
from ML.job_runner import THREAD_LIMIT_ENV
from ML.training import DEFAULT_TEST_SIZE, TrainingOptions
from testing.training_cost import (
    ONE_THREAD_ENV,
    RANDOM_STATE,
    REQUEST_PARAMS,
    TEST_SIZE,
    plain_estimator,
)

SCRIPT = PROJECT_DIR / "testing" / "training_cost.py"


@pytest.mark.parametrize("estimator", list(REQUEST_PARAMS))
def test_the_plain_fit_uses_the_servers_parameters(estimator: str) -> None:
    served = build_estimator(estimator, REQUEST_PARAMS[estimator])
    assert plain_estimator(estimator).get_params() == served.get_params()


def test_the_plain_fit_splits_and_threads_as_the_server_does() -> None:
    assert TEST_SIZE == DEFAULT_TEST_SIZE
    assert TrainingOptions().random_state == RANDOM_STATE
    assert set(ONE_THREAD_ENV) == set(THREAD_LIMIT_ENV)


# Three interpreters import scikit-learn (the plain fit, the server, its job process): about
# 15 s on a quiet machine, near the default 180 s on a loaded one.
@pytest.mark.timeout(400)
def test_the_benchmark_measures_both_sides_of_a_small_csv(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--rows", "2000", "--rounds", "1"]
    command += ["--estimators", "random_forest", "--csv", str(tmp_path / "data.csv")]
    done = subprocess.run(
        [*command, "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    report = json.loads(report_path.read_text())
    plain, server = (
        next(run for run in report["runs"] if run["mode"] == mode) for mode in ("plain", "server")
    )
    # The same data, split and seed: the server's model scores exactly as the plain one.
    assert server["accuracy"] == plain["accuracy"]
    assert plain["peak_rss_mib"] > 0 and server["peak_rss_mib"] > 0
    assert server["details"]["job_processes"] >= 1
    assert server["details"]["train_model_seconds"] > 0
    assert "| random_forest |" in done.stdout.split("peak memory ratio")[1]
    assert server["cpu_seconds"] > 0 and plain["cpu_seconds"] > 0
