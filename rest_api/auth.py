"""HTTP basic auth: verify once per worker, cache, throttle failures; role checks.

rest_api/middleware.py authenticates every request with `Authenticator` before any route
reads the body; routes then only check the role (`authorize`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from rest_api.errors import ApiError
from rest_api.passwords import verify_password
from rest_api.users import Role, UserRecord

# A hash to verify against for unknown users, so their failures cost as long as known ones.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


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


class LoginThrottle:
    """Counts failed logins per (client, user) in a sliding window, in this worker's memory."""

    def __init__(self, max_failures: int, window_seconds: float, max_keys: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def retry_after(self, key: tuple[str, str], now: float) -> int | None:
        """Seconds until this key may try again, or None when it may try now."""
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if len(failures) < self.max_failures:
            return None
        return max(1, math.ceil(failures[0] + self.window_seconds - now))

    def record_failure(self, key: tuple[str, str], now: float) -> None:
        failures = self._failures.setdefault(key, deque(maxlen=self.max_failures))
        failures.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def clear(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)


class Authenticator:
    """Checks basic credentials; a password verified once is remembered as a keyed digest."""

    def __init__(self, users: dict[str, UserRecord], throttle: LoginThrottle) -> None:
        self._users = users
        self._throttle = throttle
        self._cache_key = secrets.token_bytes(32)
        # username -> digest of the last password that verified; compared in constant time.
        self._verified: dict[str, bytes] = {}
        # Raw Authorization header -> user, for the hot path: a dict hit skips base64 and HMAC.
        self._by_header: dict[bytes, User] = {}

    def authenticate(self, authorization: bytes | None, client: str) -> User:
        if authorization is not None:
            user = self._by_header.get(authorization)
            if user is not None:
                return user
        name, password = _parse_basic(authorization)
        key = (client, name)
        now = time.monotonic()
        retry_after = self._throttle.retry_after(key, now)
        if retry_after is not None:
            raise AuthFailed(429, "too many failed logins; try again later", retry_after)
        record = self._users.get(name)
        if record is None or not self._check(record, password):
            self._throttle.record_failure(key, now)
            raise AuthFailed(401, "wrong user name or password")
        self._throttle.clear(key)
        user = User(record.name, record.role)
        if authorization is not None and len(self._by_header) < 10_000:
            self._by_header[authorization] = user
        return user

    def _check(self, record: UserRecord, password: str) -> bool:
        digest = hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()
        cached = self._verified.get(record.name)
        if cached is not None:
            return hmac.compare_digest(cached, digest)
        if record.plain_password is not None:
            expected = hmac.new(
                self._cache_key, record.plain_password.encode(), hashlib.sha256
            ).digest()
            is_valid = hmac.compare_digest(expected, digest)
        else:
            is_valid = verify_password(record.password_hash or _DUMMY_HASH, password)
        if is_valid:
            self._verified[record.name] = digest
        return is_valid


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

    def __call__(
        self, request: Request, _: Annotated[HTTPBasicCredentials | None, Depends(BASIC_SCHEME)]
    ) -> User:
        return authorize(request.scope.get("state", {}).get("user"), self.role)


NEEDS_PREDICTOR: Any = Depends(RoleCheck(Role.PREDICTOR))
NEEDS_TRAINER: Any = Depends(RoleCheck(Role.TRAINER))
