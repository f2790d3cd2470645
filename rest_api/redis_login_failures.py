"""Failed-login counters in Redis, shared by every worker of every replica (FASTML_BROKER_URL).

The policy of rest_api/login_failures.py, each step one Lua script (check, count and lock
cannot interleave across replicas). Keys, under the configured prefix:

- `login:pair:[user, client]`, `login:user:[user]`: sorted sets of attempt times;
- `login:lockouts`: hash of `[user, client]` (client "" for the account) -> until;
- `login:known:[user]`: hash of client -> last successful login;
- `login:generation`: a counter bumped when a lockout starts or ends.

Workers read the generation from memory on every request; a thread refreshes it from Redis
every GENERATION_POLL_SECONDS, so a lockout started on another replica reaches a worker's
cached logins within that time (attempts themselves are always counted in Redis).
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from ML.redis_jobs import connect
from rest_api.login_failures import ANY_ADDRESS, CountersUnavailable, Lockouts, LoginLimits

GENERATION_POLL_SECONDS = 0.2

# KEYS: pair, user, lockouts, known, generation.
# ARGV: client, now, member, max, window, account max, account window, known seconds,
#       pair field, account field, horizon seconds.
_BEGIN_ATTEMPT = """
local now = tonumber(ARGV[2])
local function locked(field)
    local until_ = tonumber(redis.call('HGET', KEYS[3], field) or '0')
    if until_ > now then return until_ end
    return nil
end
local wait_until = locked(ARGV[9])
if not wait_until then
    local known_at = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '-1')
    if known_at < 0 or known_at <= now - tonumber(ARGV[8]) then
        wait_until = locked(ARGV[10])
    end
end
if wait_until then
    return {tostring(wait_until - now), redis.call('GET', KEYS[5]) or '0'}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[1] .. '\\n' .. ARGV[3])
local function reached(key, limit, window)
    local found = redis.call('ZREVRANGEBYSCORE', key, '+inf', '(' .. (now - window),
        'WITHSCORES', 'LIMIT', limit - 1, 1)
    if #found == 0 then return 0 end
    return tonumber(found[2]) + window
end
local address_until = math.max(
    reached(KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[5])),
    reached(KEYS[1], tonumber(ARGV[6]), tonumber(ARGV[7])))
local account_until = reached(KEYS[2], tonumber(ARGV[6]), tonumber(ARGV[7]))
local function lock(field, until_)
    local current = tonumber(redis.call('HGET', KEYS[3], field) or '0')
    if until_ > current then redis.call('HSET', KEYS[3], field, tostring(until_)) end
end
if address_until > 0 then lock(ARGV[9], address_until) end
if account_until > 0 then lock(ARGV[10], account_until) end
local generation = redis.call('GET', KEYS[5]) or '0'
if address_until > 0 or account_until > 0 then
    generation = redis.call('INCR', KEYS[5])
end
local horizon = tonumber(ARGV[11])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - horizon)
redis.call('EXPIRE', KEYS[1], math.ceil(horizon))
redis.call('EXPIRE', KEYS[2], math.ceil(horizon))
if redis.call('HLEN', KEYS[3]) > 1000 then
    local all = redis.call('HGETALL', KEYS[3])
    for i = 1, #all, 2 do
        if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[3], all[i]) end
    end
end
return {false, tostring(generation)}
"""
# KEYS: pair, user, lockouts, known, generation. ARGV: client, now, pair field, account
# field, member prefix of this client, known seconds.
_RECORD_SUCCESS = """
local now = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
local prefix = ARGV[5]
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if string.sub(member, 1, #prefix) == prefix then redis.call('ZREM', KEYS[2], member) end
end
local unlocked = redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[4], math.ceil(tonumber(ARGV[6])))
local account_until = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
if unlocked > 0 or account_until > now then
    return tostring(redis.call('INCR', KEYS[5]))
end
return redis.call('GET', KEYS[5]) or '0'
"""


class RedisFailureCounters:
    """The FailureCounters of the distributed mode; safe from any thread."""

    def __init__(self, client: redis.Redis, limits: LoginLimits, prefix: str = "fastml:") -> None:
        # Any: the client decodes replies to str (connect), which redis-py's types cannot say.
        self.client: Any = client
        self.limits = limits
        self.prefix = prefix
        self._begin = client.register_script(_BEGIN_ATTEMPT)
        self._success = client.register_script(_RECORD_SUCCESS)
        self._generation = 0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def from_url(
        cls, url: str, limits: LoginLimits, prefix: str = "fastml:"
    ) -> RedisFailureCounters:
        return cls(connect(url), limits, prefix)

    def generation(self) -> int:
        if self._poller is None:  # started by the first request (again after close)
            self._stop = threading.Event()
            self._poller = threading.Thread(
                target=self._poll_generation,
                args=(self._stop,),
                name="login-failures-generation",
                daemon=True,
            )
            self._poller.start()
        return self._generation

    def refresh_generation(self) -> int:
        with self._redis():
            self._generation = int(self.client.get(self._key("generation")) or 0)
        return self._generation

    def lockouts(self, now: float) -> Lockouts:
        since = now - self.limits.known_address_seconds
        addresses: dict[tuple[str, str], float] = {}
        accounts: dict[str, tuple[float, frozenset[str]]] = {}
        with self._redis():
            rows = self.client.hgetall(self._key("lockouts"))
            for field, value in rows.items():
                user, client = json.loads(field)
                until = float(value)
                if until <= now:
                    continue
                if client != ANY_ADDRESS:
                    addresses[(user, client)] = until
                    continue
                known = self.client.hgetall(self._known_key(user))
                exempt = frozenset(c for c, at in known.items() if float(at) > since)
                accounts[user] = (until, exempt)
        return Lockouts(addresses, accounts)

    def begin_attempt(self, user: str, client: str, now: float) -> float | None:
        limits = self.limits
        horizon = max(limits.window_seconds, limits.account_window_seconds)
        with self._redis():
            wait, generation = self._begin(
                keys=self._keys(user, client),
                args=[
                    client,
                    repr(now),
                    uuid.uuid4().hex,
                    limits.max_failures,
                    repr(limits.window_seconds),
                    limits.account_max_failures,
                    repr(limits.account_window_seconds),
                    repr(limits.known_address_seconds),
                    _field(user, client),
                    _field(user, ANY_ADDRESS),
                    repr(horizon),
                ],
            )
        self._generation = int(generation)
        return None if wait is None else float(wait)

    def record_success(self, user: str, client: str, now: float) -> None:
        with self._redis():
            generation = self._success(
                keys=self._keys(user, client),
                args=[
                    client,
                    repr(now),
                    _field(user, client),
                    _field(user, ANY_ADDRESS),
                    client + "\n",
                    repr(self.limits.known_address_seconds),
                ],
            )
        self._generation = int(generation)

    def close(self) -> None:
        """Stop the poller and close the connections (both come back if used again)."""
        poller, self._poller = self._poller, None
        self._stop.set()
        if poller is not None:
            poller.join(timeout=GENERATION_POLL_SECONDS * 5)
        self.client.close()

    def _poll_generation(self, stop: threading.Event) -> None:
        while not stop.wait(GENERATION_POLL_SECONDS):
            # Attempts fail closed meanwhile; the copy refreshes when Redis is back.
            with contextlib.suppress(CountersUnavailable):
                self.refresh_generation()

    def _keys(self, user: str, client: str) -> list[str]:
        return [
            self._key(f"pair:{_field(user, client)}"),
            self._key(f"user:{json.dumps(user)}"),
            self._key("lockouts"),
            self._known_key(user),
            self._key("generation"),
        ]

    def _known_key(self, user: str) -> str:
        return self._key(f"known:{json.dumps(user)}")

    def _key(self, name: str) -> str:
        return f"{self.prefix}login:{name}"

    @contextmanager
    def _redis(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise CountersUnavailable(f"Redis does not answer: {exc}") from exc


def _field(user: str, client: str) -> str:
    return json.dumps([user, client])
