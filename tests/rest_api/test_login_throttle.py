"""The failed-login throttle: shared by workers, no oracle, an account budget that spares
the addresses a user logs in from. Workers are Authenticators on one state folder."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher, extract_parameters

from rest_api.auth import Authenticator, AuthFailed, LoginThrottle, User
from rest_api.login_failures import (
    FailureCounters,
    LocalFailureCounts,
    LoginLimits,
    SQLiteFailureCounters,
)
from rest_api.passwords import hash_password, new_hasher
from rest_api.redis_login_failures import RedisFailureCounters
from rest_api.users import Role, UserRecord

PASSWORD = "right-password-1"
LIMITS = LoginLimits(max_failures=3, window_seconds=60, account_max_failures=5)


class CountingHasher(PasswordHasher):
    """A real argon2id hasher with the server's parameters that counts its verifications."""

    verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verifications += 1
        return super().verify(hash, password)


def counting_hasher() -> CountingHasher:
    return CountingHasher.from_parameters(extract_parameters(new_hasher().hash("x")))


@pytest.fixture(scope="module")
def users() -> dict[str, UserRecord]:
    return {"tina": UserRecord("tina", Role.TRAINER, hash_password(PASSWORD))}


class SpiedCounters(SQLiteFailureCounters):
    """The real SQLite counters, counting how often the database is read or written."""

    database_calls = 0

    def lockouts(self, now: float):  # type: ignore[no-untyped-def]
        self.database_calls += 1
        return super().lockouts(now)

    def begin_attempt(self, user: str, client: str, now: float) -> float | None:
        self.database_calls += 1
        return super().begin_attempt(user, client, now)

    def record_success(self, user: str, client: str, now: float) -> None:
        self.database_calls += 1
        super().record_success(user, client, now)


OpenCounters = Callable[[], FailureCounters]


@pytest.fixture(params=["sqlite", "redis"])
def open_counters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenCounters]:
    """Opens counters as one more worker (or replica) would: the same SQLite file, or the
    same Redis keys (this test's own prefix)."""
    opened: list[RedisFailureCounters] = []

    def open_one() -> FailureCounters:
        if request.param == "sqlite":
            return SQLiteFailureCounters(tmp_path / "counters.sqlite3", LIMITS)
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        opened.append(RedisFailureCounters.from_url(url, LIMITS, prefix))
        return opened[-1]

    yield open_one
    for counters in opened:
        counters.close()


def generation_seen_by(counters: FailureCounters) -> int:
    """What another worker sees now: Redis counters refresh their copy every 0.2 s."""
    if isinstance(counters, RedisFailureCounters):
        return counters.refresh_generation()
    return counters.generation()


def worker(
    state_dir: Path, users: dict[str, UserRecord], limits: LoginLimits = LIMITS
) -> tuple[Authenticator, SpiedCounters, CountingHasher]:
    counters = SpiedCounters(state_dir / "login_failures.sqlite3", limits)
    hasher = counting_hasher()
    return Authenticator(users, LoginThrottle(counters), hasher), counters, hasher


def header(name: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{name}:{password}".encode())


def status_of(authenticator: Authenticator, authorization: bytes, client: str) -> int:
    try:
        asyncio.run(authenticator.authenticate(authorization, client))
    except AuthFailed as failure:
        return failure.status
    return 200


def test_right_password_during_a_lockout_gets_429_even_when_cached(
    tmp_path: Path, users: dict[str, UserRecord]
) -> None:
    authenticator, _, _ = worker(tmp_path, users)
    right, wrong = header("tina", PASSWORD), header("tina", "guess")
    assert status_of(authenticator, right, "10.0.0.1") == 200  # now cached in this worker
    assert [status_of(authenticator, wrong, "10.0.0.1") for _ in range(3)] == [401] * 3

    # Past the limit the answer does not depend on the password: no oracle.
    assert status_of(authenticator, wrong, "10.0.0.1") == 429
    assert status_of(authenticator, right, "10.0.0.1") == 429
    with pytest.raises(AuthFailed) as refused:
        asyncio.run(authenticator.authenticate(right, "10.0.0.1"))
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 60
    # Another address of the same user is not locked out by this one.
    assert status_of(authenticator, right, "10.0.0.2") == 200


def test_workers_share_failures_and_lockouts(tmp_path: Path, users: dict[str, UserRecord]) -> None:
    first, _, _ = worker(tmp_path, users)
    second, second_counters, _ = worker(tmp_path, users)
    right, wrong = header("tina", PASSWORD), header("tina", "guess")
    assert status_of(second, right, "10.0.0.1") == 200
    assert status_of(second, right, "10.0.0.1") == 200

    # A cached login costs no database call, unless a lockout started somewhere.
    calls = second_counters.database_calls
    for _ in range(50):
        assert status_of(second, right, "10.0.0.1") == 200
    assert second_counters.database_calls == calls

    # Failures split over two workers count as one.
    assert status_of(first, wrong, "10.0.0.1") == 401
    assert status_of(second, wrong, "10.0.0.1") == 401
    assert status_of(first, wrong, "10.0.0.1") == 401
    assert status_of(second, wrong, "10.0.0.1") == 429
    # The worker that had the right password cached refuses it too.
    assert status_of(second, right, "10.0.0.1") == 429
    assert status_of(first, right, "10.0.0.1") == 429


def test_unknown_names_are_throttled_like_known_ones(
    tmp_path: Path, users: dict[str, UserRecord]
) -> None:
    authenticator, _, _ = worker(tmp_path, users)
    for name in ["tina", "nobody"]:
        answers = [status_of(authenticator, header(name, "guess"), "10.0.0.1") for _ in range(4)]
        assert answers == [401, 401, 401, 429], name


def test_concurrent_guesses_cannot_pass_the_limit(
    open_counters: OpenCounters, users: dict[str, UserRecord]
) -> None:
    hasher = counting_hasher()
    authenticator = Authenticator(users, LoginThrottle(open_counters()), hasher)

    async def flood() -> list[int]:
        async def one(index: int) -> int:
            try:
                await authenticator.authenticate(header("tina", f"guess-{index}"), "10.0.0.1")
            except AuthFailed as failure:
                return failure.status
            return 200

        return list(await asyncio.gather(*(one(index) for index in range(20))))

    answers = asyncio.run(flood())
    # Attempts are counted before their hashes are checked: three guesses, no more.
    assert sorted(answers) == [401] * 3 + [429] * 17
    assert hasher.verifications == 3


def test_account_budget_spares_addresses_the_user_logs_in_from(
    open_counters: OpenCounters, users: dict[str, UserRecord]
) -> None:
    authenticator = Authenticator(users, LoginThrottle(open_counters()), counting_hasher())
    right, wrong = header("tina", PASSWORD), header("tina", "guess")
    assert status_of(authenticator, right, "10.0.0.9") == 200  # the user's usual address

    # An attacker with several addresses: 3 + 2 failures reach the account's budget of 5.
    attacker = [status_of(authenticator, wrong, "10.6.6.1") for _ in range(3)]
    attacker += [status_of(authenticator, wrong, "10.6.6.2") for _ in range(2)]
    assert attacker == [401] * 5
    assert status_of(authenticator, wrong, "10.6.6.3") == 429
    assert status_of(authenticator, right, "10.6.6.3") == 429  # even with the right password

    # The real user keeps working from their address, cached or in a fresh worker...
    assert status_of(authenticator, right, "10.0.0.9") == 200
    fresh_worker = Authenticator(users, LoginThrottle(open_counters()), counting_hasher())
    assert status_of(fresh_worker, right, "10.0.0.9") == 200
    # ...and waits, like the attacker, on an address they never logged in from.
    assert status_of(fresh_worker, right, "10.0.0.7") == 429


def test_per_address_cap_holds_on_a_known_address(open_counters: OpenCounters) -> None:
    counters = open_counters()
    counters.record_success("tina", "10.0.0.9", now=0.0)
    # Known addresses are exempt from the shared budget, not from their own: after the
    # short window's lockouts pass, the account budget caps the address as well.
    moments = [0.0, 1.0, 2.0, 70.0, 71.0]
    assert [counters.begin_attempt("tina", "10.0.0.9", at) for at in moments] == [None] * 5
    wait = counters.begin_attempt("tina", "10.0.0.9", 140.0)
    assert wait is not None and wait > 3000


def test_lockout_ends_with_its_window_and_success_forgets_failures(
    open_counters: OpenCounters,
) -> None:
    counters = open_counters()
    for at in [0.0, 1.0, 2.0]:
        assert counters.begin_attempt("tina", "10.0.0.1", at) is None
    assert counters.begin_attempt("tina", "10.0.0.1", 30.0) == pytest.approx(30.0)
    assert counters.lockouts(30.0).seconds_left("tina", "10.0.0.1", 30.0) == pytest.approx(30.0)
    # The oldest failure leaves the window at 60 s: one more try, which a success clears.
    assert counters.begin_attempt("tina", "10.0.0.1", 60.5) is None
    counters.record_success("tina", "10.0.0.1", 60.6)
    assert counters.lockouts(60.7).seconds_left("tina", "10.0.0.1", 60.7) is None
    for at in [61.0, 62.0]:
        assert counters.begin_attempt("tina", "10.0.0.1", at) is None


def test_generation_changes_when_a_lockout_starts_or_ends(open_counters: OpenCounters) -> None:
    counters, other_worker = open_counters(), open_counters()
    start = generation_seen_by(other_worker)
    counters.begin_attempt("tina", "10.0.0.1", 0.0)
    counters.begin_attempt("tina", "10.0.0.1", 1.0)
    assert generation_seen_by(other_worker) == start  # failures alone change no lockout
    counters.begin_attempt("tina", "10.0.0.1", 2.0)
    locked = generation_seen_by(other_worker)
    assert locked != start
    counters.record_success("tina", "10.0.0.1", 3.0)
    assert generation_seen_by(other_worker) != locked


def test_cached_login_reports_its_user(tmp_path: Path, users: dict[str, UserRecord]) -> None:
    authenticator, _, _ = worker(tmp_path, users)
    for _ in range(2):
        user = asyncio.run(authenticator.authenticate(header("tina", PASSWORD), "10.0.0.1"))
        assert user == User("tina", Role.TRAINER)


def test_a_burst_of_identical_logins_is_one_attempt(
    tmp_path: Path, users: dict[str, UserRecord]
) -> None:
    authenticator, _, hasher = worker(tmp_path, users)

    async def burst(authorization: bytes) -> list[int]:
        async def one() -> int:
            try:
                await authenticator.authenticate(authorization, "10.0.0.1")
            except AuthFailed as failure:
                return failure.status
            return 200

        return list(await asyncio.gather(*(one() for _ in range(30))))

    # A client opening many connections at once with the same wrong password: one guess...
    assert asyncio.run(burst(header("tina", "guess"))) == [401] * 30
    assert hasher.verifications == 1
    # ...and with the right one: no lockout, whatever the limit of 3.
    assert asyncio.run(burst(header("tina", PASSWORD))) == [200] * 30
    assert hasher.verifications == 2


def test_local_counts_stop_a_guesser_at_the_limit_and_forget_on_success() -> None:
    # The full-disk fallback (tests/system/test_faults_disk.py runs it on a real full disk).
    limits = LoginLimits(max_failures=3, window_seconds=60)
    counts = LocalFailureCounts(limits)
    assert [counts.begin_attempt("eve", "10.0.0.9", 100.0 + i) for i in range(3)] == [None] * 3
    assert counts.begin_attempt("eve", "10.0.0.9", 103.0) == pytest.approx(57.0)
    assert counts.begin_attempt("eve", "10.0.0.8", 103.0) is None  # another address
    assert counts.begin_attempt("eve", "10.0.0.9", 161.0) is None  # the oldest left the window
    counts.record_success("eve", "10.0.0.9")
    assert [counts.begin_attempt("eve", "10.0.0.9", 162.0 + i) for i in range(3)] == [None] * 3
