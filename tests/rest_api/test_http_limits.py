"""HttpLimits: the settings the worker reads, and the refusal of unusable values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ML.config import Settings
from rest_api.http_limits import HttpLimits


def test_defaults_hold_without_variables() -> None:
    limits = HttpLimits.from_settings(Settings(), max_request_line=4096)
    assert limits.max_request_line == 4096
    assert limits.max_header_bytes == 32768
    assert limits.header_timeout == 10.0
    assert (limits.body_timeout, limits.body_min_rate) == (20.0, 500.0)


def test_variables_set_the_deadlines_and_the_head_size(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in {
        "FASTML_LIMIT_REQUEST_HEAD_BYTES": "65536",
        "FASTML_HEADER_TIMEOUT": "2.5",
        "FASTML_BODY_TIMEOUT": "30",
        "FASTML_BODY_MIN_RATE": "1000",
    }.items():
        monkeypatch.setenv(variable, value)
    limits = HttpLimits.from_settings(Settings())
    assert limits.max_header_bytes == 65536
    assert isinstance(limits.max_header_bytes, int)
    assert (limits.header_timeout, limits.body_timeout, limits.body_min_rate) == (2.5, 30, 1000)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FASTML_HEADER_TIMEOUT", "abc", "header_timeout"),
        ("FASTML_BODY_MIN_RATE", "0", "body_min_rate"),
        ("FASTML_LIMIT_REQUEST_HEAD_BYTES", "1.5", "limit_request_head_bytes"),
    ],
)
def test_an_unusable_value_is_named_with_what_to_set(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_a_limit_from_gunicorn_must_be_positive() -> None:
    with pytest.raises(
        ValueError, match=r"keepalive \(FASTML_KEEPALIVE\) must be greater than 0; got 0"
    ):
        HttpLimits.from_settings(Settings(), keep_alive_timeout=0)
