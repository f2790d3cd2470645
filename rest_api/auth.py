"""HTTP basic auth: verify once per worker, cache, throttle failures; role checks.

rest_api/middleware.py authenticates every request with `Authenticator` before any route
reads the body; routes then only check the role (`authorize`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import logging
import math
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from argon2 import PasswordHasher
from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from ML.config import Settings
from rest_api.errors import ApiError
from rest_api.login_failures import (
    CountersDiskFull,
    CountersUnavailable,
    FailureCounters,
    LocalFailureCounts,
    Lockouts,
    LoginLimits,
    SQLiteFailureCounters,
)
from rest_api.passwords import new_hasher, verify_password
from rest_api.users import Role, UserRecord, load_users

logger = logging.getLogger(__name__)

# Verified in place of a user's hash when the name is unknown, so that a wrong name costs
# what a wrong password costs (same scheme and parameters as every other hash).
_DUMMY_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$6SxFziGY0/ku7cL4fDFiuw$"
    "GZrt3Jp9wUwl2HBhMhvxacFiNsVS6EMAwuyG8696apQ"
)
# A cached login is checked against the shared counters again after this long, which also
# keeps its address known to the account budget.
CACHED_LOGIN_SECONDS = 3600.0
MAX_CACHED_LOGINS = 10_000
# Names are counted by their first 128 characters, so junk names cannot fill the disk.
MAX_COUNTED_NAME_CHARS = 128
# The hash threads' niceness (0 to 19): enough for the event loops to win the CPU.
HASH_THREAD_NICENESS = 10
_T = TypeVar("_T")


@dataclass(frozen=True)
class User:
    name: str
    role: Role


class AuthFailed(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _too_many_failures(seconds: float) -> AuthFailed:
    return AuthFailed(
        429, "too many failed logins for this user; try again later", max(1, math.ceil(seconds))
    )


class LoginThrottle:
    """This worker's door to the shared failure counters.

    Counter I/O runs on one thread of its own, never on the event loop. The hot path checks a
    local copy of the lockouts, reloaded only when the counters' generation changes.
    """

    def __init__(self, counters: FailureCounters) -> None:
        self._counters = counters
        self._local = LocalFailureCounts(counters.limits)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="login-failures")
        self._seen_generation = -1
        self._lockouts = Lockouts()
        self._is_failing = False

    def is_copy_stale(self) -> bool:
        """Whether a lockout started or ended since the local copy was read (no I/O)."""
        return self._counters.generation() != self._seen_generation

    async def reload_copy(self) -> None:
        generation = self._counters.generation()
        try:
            lockouts = await self._run(self._counters.lockouts, time.time())
        except _DiskFull:  # the shared counters cannot open on a full disk: keep this copy
            return
        self._lockouts, self._seen_generation = lockouts, generation

    def refuse_if_locked_out(self, user: str, client: str) -> None:
        """429 from the local copy, which the caller keeps fresh with `reload_copy`."""
        lockouts = self._lockouts
        if lockouts.addresses or lockouts.accounts:
            wait = lockouts.seconds_left(user, client, time.time())
            if wait is not None:
                raise _too_many_failures(wait)

    async def begin_attempt(self, user: str, client: str) -> float | None:
        try:
            return await self._run(self._counters.begin_attempt, user, client, time.time())
        except _DiskFull:
            return self._local.begin_attempt(user, client, time.monotonic())

    async def record_success(self, user: str, client: str) -> None:
        self._local.record_success(user, client)
        with contextlib.suppress(_DiskFull):  # the login verified; forgetting can wait
            await self._run(self._counters.record_success, user, client, time.time())

    def close(self) -> None:
        self._counters.close()

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._io, function, *args)
        except sqlite3.Error as error:
            if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                # A full disk must not stop logins (and so predictions): count in memory.
                logger.warning("the disk is full: failed logins are counted per worker for now")
                raise _DiskFull from error
            # Fail closed: without the counters nobody may guess, but nothing is corrupted.
            # Said once per outage (a state folder moved away fails every login), not per login.
            if not self._is_failing:
                self._is_failing = True
                logger.exception("the failed-login counters cannot be read or written")
            raise AuthFailed(503, "logins are unavailable for a moment; try again", 1) from None
        except CountersDiskFull as error:
            logger.warning("the disk is full: failed logins are counted per worker for now")
            raise _DiskFull from error
        except CountersUnavailable as error:
            if not self._is_failing:
                self._is_failing = True
                logger.warning("the failed-login counters cannot be reached: %s", error)
            raise AuthFailed(503, "logins are unavailable for a moment; try again", 1) from None
        if self._is_failing:
            logger.warning("the failed-login counters work again")
            self._is_failing = False
        return result


class _DiskFull(Exception):
    """The shared counters could not be written: no space left on their disk."""


@dataclass
class _CachedLogin:
    user: User
    counted_name: str
    expires_at: float


class Authenticator:
    """Checks basic credentials; a password verified once is remembered as a keyed digest.

    Every failed login costs exactly one argon2id verification, known user or not, run on
    a bounded thread pool so that a flood of wrong passwords never stalls the event loop.
    """

    def __init__(
        self,
        users: dict[str, UserRecord],
        throttle: LoginThrottle,
        hasher: PasswordHasher | None = None,
        hash_threads: int | None = None,
    ) -> None:
        self._users = users
        self._throttle = throttle
        self._hasher = hasher or new_hasher()
        # As many hashes at once as there are cores: more would only queue inside the CPU.
        self._hash_pool = ThreadPoolExecutor(
            max_workers=hash_threads or _usable_cores(),
            thread_name_prefix="password-hash",
            initializer=_lower_this_threads_priority,
        )
        self._cache_key = secrets.token_bytes(32)
        # username -> digest of the last password that verified; compared in constant time.
        self._verified: dict[str, bytes] = {}
        # (client, raw Authorization header) -> user: the hot path skips base64 and HMAC.
        self._cache: dict[tuple[str, bytes], _CachedLogin] = {}
        self._in_flight: dict[tuple[str, bytes], asyncio.Future[User]] = {}

    def close(self) -> None:
        """Close the shared counters' connections (the app's lifespan ends)."""
        self._throttle.close()

    def known_user(self, authorization: bytes | None, client: str) -> User | None:
        """`authenticate` without awaiting, for credentials this worker verified before (the
        hot path: no coroutine per request); None when only `authenticate` can answer."""
        cached = self._cached_login(authorization, client)
        if cached is None or self._throttle.is_copy_stale():
            return None
        # The same lockout decision as an uncached login: a 429 never depends on whether the
        # password is right.
        self._throttle.refuse_if_locked_out(cached.counted_name, client)
        return cached.user

    async def authenticate(self, authorization: bytes | None, client: str) -> User:
        throttle = self._throttle
        cached = self._cached_login(authorization, client)
        if cached is not None:
            if throttle.is_copy_stale():
                await throttle.reload_copy()
            throttle.refuse_if_locked_out(cached.counted_name, client)
            return cached.user
        if authorization is not None:
            # Identical credentials arriving together from one address are one attempt: a
            # client opening 64 connections at once must not lock itself out.
            key = (client, authorization)
            verification = self._in_flight.get(key)
            if verification is None:
                verification = asyncio.ensure_future(self._verify(authorization, client))
                self._in_flight[key] = verification
                verification.add_done_callback(functools.partial(self._forget_in_flight, key))
            return await asyncio.shield(verification)
        return await self._verify(authorization, client)

    def _cached_login(self, authorization: bytes | None, client: str) -> _CachedLogin | None:
        if authorization is None:
            return None
        cached = self._cache.get((client, authorization))
        return cached if cached is not None and cached.expires_at > time.monotonic() else None

    async def _verify(self, authorization: bytes | None, client: str) -> User:
        """The uncached path: count the attempt, check the hash, remember a success."""
        throttle = self._throttle
        name, password = _parse_basic(authorization)
        counted_name = name[:MAX_COUNTED_NAME_CHARS]
        # A lockout this worker already knows of costs no database write to refuse.
        if throttle.is_copy_stale():
            await throttle.reload_copy()
        throttle.refuse_if_locked_out(counted_name, client)
        wait = await throttle.begin_attempt(counted_name, client)
        if wait is not None:
            raise _too_many_failures(wait)
        record = self._users.get(name)
        is_valid = await self._check(record, password)  # before the `if`: unknown names too
        if record is None or not is_valid:
            raise AuthFailed(401, "wrong user name or password")
        await self._throttle.record_success(counted_name, client)
        user = User(record.name, record.role)
        if authorization is not None:
            if len(self._cache) >= MAX_CACHED_LOGINS:
                del self._cache[next(iter(self._cache))]  # the oldest
            expires_at = time.monotonic() + CACHED_LOGIN_SECONDS
            self._cache[(client, authorization)] = _CachedLogin(user, counted_name, expires_at)
        return user

    def _forget_in_flight(self, key: tuple[str, bytes], verification: asyncio.Future[User]) -> None:
        self._in_flight.pop(key, None)
        if not verification.cancelled():
            verification.exception()  # its awaiters got it; never reported as lost

    async def _check(self, record: UserRecord | None, password: str) -> bool:
        """One hash verification for every wrong password and unknown user; none for a
        password this worker verified before."""
        digest = hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()
        if record is not None and hmac.compare_digest(self._verified.get(record.name, b""), digest):
            return True
        encoded = record.password_hash if record is not None else _DUMMY_HASH
        is_valid = await asyncio.get_running_loop().run_in_executor(
            self._hash_pool, verify_password, self._hasher, encoded, password
        )
        if is_valid and record is not None:
            self._verified[record.name] = digest
            return True
        return False


def build_authenticator(settings: Settings) -> Authenticator:
    """Users, shared counters and hasher as `settings` describe them."""
    hasher = new_hasher()
    limits = LoginLimits(
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_window_seconds,
        account_max_failures=settings.login_account_max_failures,
        account_window_seconds=settings.login_account_window_seconds,
        known_address_seconds=settings.login_known_address_days * 86400,
    )
    counters: FailureCounters
    if settings.broker_url:  # every replica counts in the broker's Redis
        from rest_api.redis_login_failures import RedisFailureCounters

        counters = RedisFailureCounters.from_url(
            settings.broker_url, limits, settings.redis_key_prefix
        )
    else:
        counters = SQLiteFailureCounters(
            settings.login_failures_db_path, limits, create=settings.create_store
        )
    return Authenticator(load_users(settings, hasher), LoginThrottle(counters), hasher)


def _lower_this_threads_priority() -> None:
    """Hash threads yield the CPU to the event loops: under a flood of wrong passwords,
    logins wait, not everyone's predictions. Linux sets niceness per thread."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parse_basic(authorization: bytes | None) -> tuple[str, str]:
    if not authorization:
        raise AuthFailed(401, "authentication required: send HTTP basic credentials")
    scheme, _, encoded = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        raise AuthFailed(401, "only HTTP basic authentication is supported")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthFailed(401, "malformed basic credentials") from None
    name, separator, password = decoded.partition(":")
    if not separator:
        raise AuthFailed(401, "malformed basic credentials: expected user:password")
    return name, password


def authorize(user: User | None, role: Role) -> User:
    """The user the edge authenticated, if their role allows `role`; else a 401 or 403.

    The one role check: the FastAPI dependencies below and the JSON predict endpoint
    (rest_api/predict_json.py) both call it.
    """
    if user is None:  # only reachable if the auth middleware was bypassed
        raise ApiError(401, "authentication required")
    if not user.role.allows(role):
        raise ApiError(
            403, f"user '{user.name}' has role {user.role.value}; this needs {role.value}"
        )
    return user


# Declared so Swagger offers "Authorize"; the middleware has already checked the header.
BASIC_SCHEME = HTTPBasic(auto_error=False, description="fastml user name and password")


class RoleCheck:
    """A dependency for `dependencies=[...]`: the route needs at least `role`.

    The edge reads `role` too (rest_api/middleware.py), so a user whose role may not call
    the route gets the 403 before the body is read.
    """

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(
        self, request: Request, _: Annotated[HTTPBasicCredentials | None, Depends(BASIC_SCHEME)]
    ) -> User:
        # async, though it never awaits: FastAPI runs a plain def dependency in the thread pool,
        # a hop that costs more than this dict lookup.
        return authorize(request.scope.get("state", {}).get("user"), self.role)


NEEDS_PREDICTOR: Any = Depends(RoleCheck(Role.PREDICTOR))
NEEDS_TRAINER: Any = Depends(RoleCheck(Role.TRAINER))
NEEDS_ADMIN: Any = Depends(RoleCheck(Role.ADMIN))
# The user, for routes that answer differently by who asks (a predictor sees only its jobs).
PredictorUser = Annotated[User, NEEDS_PREDICTOR]
