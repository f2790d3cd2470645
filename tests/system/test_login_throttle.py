"""The login throttle on real gunicorn with two workers: one count, no password oracle, and
an account budget that spares the address the user logs in from (127.0.0.x are all local)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from testing.login_flood import flood
from testing.login_flood import main as login_flood_main
from testing.servers import ADMIN, Server, start_server, stop_server

pytestmark = pytest.mark.system

MAX_FAILURES = 4
ACCOUNT_MAX_FAILURES = 6
BATCH = 6  # concurrent requests on fresh connections, so both workers answer
MAX_BATCHES = 30
WRONG = (ADMIN[0], "not-the-password")


@pytest.fixture
def throttled_server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(
        tmp_path,
        {
            "FASTML_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
            "FASTML_LOGIN_WINDOW_SECONDS": "300",
            "FASTML_LOGIN_ACCOUNT_MAX_FAILURES": str(ACCOUNT_MAX_FAILURES),
        },
    )
    try:
        yield running
    finally:
        stop_server(running)


def login(
    server: Server, credentials: tuple[str, str], source: str = "127.0.0.1"
) -> tuple[int, int | None, int | None]:
    """(status, Retry-After, worker pid) of one request on a new connection from `source`."""
    request_id = uuid.uuid4().hex
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        answer = client.get(
            f"{server.url}/models", auth=credentials, headers={"X-Request-ID": request_id}
        )
    retry_after = answer.headers.get("retry-after")
    pid = server.worker_pid_of(request_id)
    return answer.status_code, int(retry_after) if retry_after else None, pid


def a_new_guess() -> tuple[str, str]:
    # Distinct guesses: identical credentials sent together count as one attempt.
    return ADMIN[0], f"guess-{uuid.uuid4().hex}"


def logins_until_both_workers_answered(
    server: Server,
    credentials: Callable[[], tuple[str, str]],
    source: str = "127.0.0.1",
    at_least: int = 0,
) -> list[tuple[int, int | None, int | None]]:
    answers: list[tuple[int, int | None, int | None]] = []
    with ThreadPoolExecutor(BATCH) as pool:
        for _ in range(MAX_BATCHES):
            answers += pool.map(lambda _: login(server, credentials(), source), range(BATCH))
            if len({pid for _, _, pid in answers}) >= 2 and len(answers) >= at_least:
                return answers
    raise AssertionError(f"{MAX_BATCHES * BATCH} requests never reached both workers: {answers}")


def test_workers_count_failures_as_one_and_refuse_the_right_password(
    throttled_server: Server,
) -> None:
    # Both workers verify and cache the right password first.
    assert {
        status
        for status, _, _ in logins_until_both_workers_answered(throttled_server, lambda: ADMIN)
    } == {200}

    wrong = logins_until_both_workers_answered(
        throttled_server, a_new_guess, at_least=3 * MAX_FAILURES
    )
    statuses = [status for status, _, _ in wrong]
    # One shared count: exactly MAX_FAILURES guesses were checked, whichever worker got them.
    assert statuses.count(401) == MAX_FAILURES, statuses
    assert statuses.count(429) == len(statuses) - MAX_FAILURES, statuses

    # Past the limit the right password gets 429 too, on every worker, cached or not.
    right = logins_until_both_workers_answered(throttled_server, lambda: ADMIN)
    assert {status for status, _, _ in right} == {429}, right
    assert all(retry_after and 1 <= retry_after <= 300 for _, retry_after, _ in right)


def test_account_budget_spares_the_address_the_user_logs_in_from(
    throttled_server: Server,
) -> None:
    assert login(throttled_server, ADMIN, "127.0.0.1")[0] == 200
    attackers = ["127.0.0.2", "127.0.0.3"]
    statuses = [
        login(throttled_server, WRONG, source)[0]
        for source in attackers
        for _ in range(MAX_FAILURES)
    ]
    # 4 + 2 failures spend the account's budget of 6; the rest of the second address's
    # tries are refused unchecked.
    assert statuses == [401] * 4 + [401, 401, 429, 429], statuses
    assert login(throttled_server, ADMIN, "127.0.0.4")[0] == 429  # a new address waits
    usual = logins_until_both_workers_answered(throttled_server, lambda: ADMIN, "127.0.0.1")
    assert {status for status, _, _ in usual} == {200}, usual


def test_login_flood_client_gets_401s_and_locks_nobody_out(throttled_server: Server) -> None:
    statuses = asyncio.run(flood(throttled_server.url, concurrency=4, duration=2.0))
    # Every guess is a new name: the throttle cannot stop it, each one is hashed and refused.
    assert set(statuses) == {"401"} and statuses["401"] > MAX_FAILURES, statuses
    assert login(throttled_server, ADMIN)[0] == 200
    with pytest.raises(SystemExit) as refused:
        login_flood_main(["--url", "http://192.0.2.1:8000", "--duration", "1"])
    assert refused.value.code == 2
