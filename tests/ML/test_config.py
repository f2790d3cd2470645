"""Every FASTML_* setting is defined once, in ML/config.py, and README lists exactly those."""

from __future__ import annotations

import re

import pytest

from ML.config import PROJECT_DIR, Settings, configuration_table, environment_variable

# Read by the test suite and scripts/test, not by the server (see README "Tests").
TEST_ONLY_VARIABLES = {"FASTML_REQUIRE_REDIS", "FASTML_TEST_REDIS_URL"}
SERVER_SOURCES = ["ML", "rest_api", "gunicorn"]


def test_readme_configuration_table_is_generated_from_settings() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    assert configuration_table() in readme, "run `python -m ML.config` and paste it into README"


def test_every_setting_has_a_one_line_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert "\n" not in field.description, name


def test_server_code_reads_no_variable_that_is_not_a_setting() -> None:
    known = {environment_variable(name) for name in Settings.model_fields}
    files = [PROJECT_DIR / "wsgi.py", PROJECT_DIR / "Dockerfile"]
    for source in SERVER_SOURCES:
        files += [
            path for path in (PROJECT_DIR / source).rglob("*") if path.suffix in {".py", ".sh"}
        ]
    mentioned = set()
    for path in files:
        mentioned |= set(re.findall(r"\bFASTML_[A-Z][A-Z0-9_]*", path.read_text()))
    assert mentioned - known - TEST_ONLY_VARIABLES == set()


def test_removed_settings_stay_removed() -> None:
    for name in ("recent_jobs_limit", "lean_predict", "batch_in_thread", "control_socket"):
        assert name not in Settings.model_fields


@pytest.mark.parametrize("spelling", ["WARNING", "warning", "Warning"])
def test_log_level_in_any_case(spelling: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTML_LOG_LEVEL", spelling)
    assert Settings().log_level == "warning"


def test_fast_ml_credentials_come_only_from_service_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTML_SERVICE_USER", "alias")
    monkeypatch.delenv("SERVICE_USER", raising=False)
    assert Settings().service_user is None
    monkeypatch.setenv("SERVICE_USER", "alice")
    assert Settings().service_user == "alice"


def test_readme_lists_every_estimator_of_the_registry() -> None:
    from ML.estimators import ESTIMATORS

    readme = (PROJECT_DIR / "README.md").read_text()
    paragraph = readme[readme.index("Estimators (`ML/estimators.py`") :].split("\n\n")[0]
    listed = re.findall(r"`([a-z_]+)`", paragraph)
    assert sorted(listed) == sorted(ESTIMATORS)
