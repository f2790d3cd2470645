"""How --processes splits one load test (the merge is in test_load_report.py, a real run with
two processes against gunicorn in tests/system/test_load_client.py)."""

from __future__ import annotations

import pytest

from testing.load_config import LoadConfig, LoadTestError
from testing.load_processes import child_configs, shares


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [
        (10, 2, [5, 5]),
        (11, 3, [4, 4, 3]),
        (3, 3, [1, 1, 1]),
        (1_000_000, 3, [333_334, 333_333, 333_333]),
    ],
)
def test_shares_add_up_and_differ_by_at_most_one(
    total: int, parts: int, expected: list[int]
) -> None:
    assert shares(total, parts) == expected


def config(**overrides: object) -> LoadConfig:
    settings: dict[str, object] = {"user": "u", "password": "p", "show_progress": True}
    return LoadConfig(**{**settings, **overrides})  # type: ignore[arg-type]


def test_each_process_gets_its_share_of_requests_concurrency_and_rate() -> None:
    children = child_configs(config(requests=1001, concurrency=64, rate=3000.0), 3)
    assert [c.requests for c in children] == [334, 334, 333]
    assert [c.concurrency for c in children] == [22, 21, 21]
    assert [c.rate for c in children] == [1000.0, 1000.0, 1000.0]
    # Only the parent shows a progress bar; everything else is the parent's.
    assert not any(c.show_progress for c in children)
    assert {(c.url, c.payload, c.credentials) for c in children} == {
        ("http://127.0.0.1:8000", config().payload, config().credentials)
    }


@pytest.mark.parametrize(
    ("overrides", "processes"),
    [({"concurrency": 2}, 3), ({"requests": 2}, 3), ({}, 0)],
)
def test_a_run_that_cannot_be_split_is_refused(
    overrides: dict[str, object], processes: int
) -> None:
    with pytest.raises(LoadTestError, match="--processes"):
        child_configs(config(**overrides), processes)
