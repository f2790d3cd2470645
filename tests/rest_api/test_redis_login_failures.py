"""The failed-login counters in a real Redis: the SQLite counters' policy, shared by replicas."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from rest_api.auth import Authenticator, LoginThrottle
from rest_api.passwords import hash_password
from rest_api.redis_login_failures import RedisFailureCounters
from rest_api.users import Role, UserRecord
from tests.redis_fixture import RedisServer
from tests.rest_api.test_login_throttle import (
    LIMITS,
    PASSWORD,
    counting_hasher,
    header,
    status_of,
)

Counters = Callable[[], RedisFailureCounters]


@pytest.fixture
def counters(redis_url: str, redis_prefix: str) -> Iterator[Counters]:
    """Counters as one replica's worker opens them; every one shares the test's prefix."""
    opened: list[RedisFailureCounters] = []

    def open_counters() -> RedisFailureCounters:
        opened.append(RedisFailureCounters.from_url(redis_url, LIMITS, redis_prefix))
        return opened[-1]

    yield open_counters
    for counter in opened:
        counter.close()


@pytest.fixture(scope="module")
def users() -> dict[str, UserRecord]:
    return {"tina": UserRecord("tina", Role.TRAINER, hash_password(PASSWORD))}


def replica(counters: Counters, users: dict[str, UserRecord]) -> Authenticator:
    return Authenticator(users, LoginThrottle(counters()), counting_hasher())


def test_replicas_share_failures_and_lockouts(
    counters: Counters, users: dict[str, UserRecord]
) -> None:
    first, second = replica(counters, users), replica(counters, users)
    right, wrong = header("tina", PASSWORD), header("tina", "guess")
    assert status_of(second, right, "10.0.0.1") == 200

    assert status_of(first, wrong, "10.0.0.1") == 401
    assert status_of(second, wrong, "10.0.0.1") == 401
    assert status_of(first, wrong, "10.0.0.1") == 401
    assert status_of(second, wrong, "10.0.0.1") == 429
    assert status_of(first, right, "10.0.0.1") == 429  # no oracle past the limit
    assert status_of(first, right, "10.0.0.2") == 200  # another address is not locked


def test_redis_away_fails_logins_closed_with_503(
    private_redis: RedisServer, users: dict[str, UserRecord]
) -> None:
    counters = RedisFailureCounters.from_url(private_redis.url, LIMITS)
    try:
        authenticator = Authenticator(users, LoginThrottle(counters), counting_hasher())
        private_redis.stop()
        assert status_of(authenticator, header("tina", "guess"), "10.0.0.1") == 503
        private_redis.start()
        assert status_of(authenticator, header("tina", PASSWORD), "10.0.0.1") == 200
    finally:
        counters.close()
