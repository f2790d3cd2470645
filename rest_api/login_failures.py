"""Failed-login counters shared by every worker of a server (SQLite on the embedded default).

The policy, the same for every implementation:
- An attempt is counted *before* its password is checked and forgotten when it succeeds, so
  concurrent guesses cannot slip past a limit while their hashes are being verified.
- Per address and user: `max_failures` per `window_seconds` and `account_max_failures` per
  `account_window_seconds`; past either, that address gets 429 for that user, right password
  or not.
- Per account: `account_max_failures` per `account_window_seconds` over all addresses. Past
  it, only addresses the account has not logged in from within `known_address_seconds` are
  refused. An attacker elsewhere therefore cannot lock the real user out of the addresses
  they use, while a botnet shares one budget of guesses.

Workers keep a copy of the current lockouts for their hot path (a cached login costs no I/O)
and reload it when `generation()`, a counter in a small memory-mapped file, changes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ML.private_files import PRIVATE_FILE_MODE, make_private_database
from ML.sqlite_db import is_disk_full, write_transaction

BUSY_TIMEOUT_SECONDS = 5.0
# The client of a lockout row that locks an account for unknown addresses, not one address.
ANY_ADDRESS = ""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (user TEXT NOT NULL, client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS attempts_by_pair ON attempts (user, client, at);
CREATE INDEX IF NOT EXISTS attempts_by_user ON attempts (user, at);
CREATE INDEX IF NOT EXISTS attempts_by_time ON attempts (at);
CREATE TABLE IF NOT EXISTS lockouts (
    user TEXT NOT NULL, client TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (user, client)
);
CREATE TABLE IF NOT EXISTS known_addresses (
    user TEXT NOT NULL, client TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (user, client)
);
"""
_LOCKED_UNTIL = "SELECT until FROM lockouts WHERE user = ? AND client = ? AND until > ?"
_IS_KNOWN = "SELECT 1 FROM known_addresses WHERE user = ? AND client = ? AND at > ?"
# The n-th newest attempt in a window (OFFSET n-1): if it exists, the limit n is reached,
# and the lockout lasts until that attempt leaves the window.
_NTH_NEWEST_OF_PAIR = (
    "SELECT at FROM attempts WHERE user = ? AND client = ? AND at > ? "
    "ORDER BY at DESC LIMIT 1 OFFSET ?"
)
_NTH_NEWEST_OF_USER = (
    "SELECT at FROM attempts WHERE user = ? AND at > ? ORDER BY at DESC LIMIT 1 OFFSET ?"
)
_LOCK = (
    "INSERT INTO lockouts (user, client, until) VALUES (?, ?, ?) "
    "ON CONFLICT (user, client) DO UPDATE SET until = max(until, excluded.until)"
)
_REMEMBER_ADDRESS = (
    "INSERT INTO known_addresses (user, client, at) VALUES (?, ?, ?) "
    "ON CONFLICT (user, client) DO UPDATE SET at = excluded.at"
)


class CountersDiskFull(Exception):
    """The counters' disk has no space left, so they cannot be opened or written."""


class CountersUnavailable(Exception):
    """The shared counters cannot be reached (Redis away): logins fail closed, with a 503."""


@dataclass(frozen=True)
class LoginLimits:
    max_failures: int = 10
    window_seconds: float = 60.0
    account_max_failures: int = 100
    account_window_seconds: float = 3600.0
    known_address_seconds: float = 30 * 86400.0


@dataclass(frozen=True)
class Lockouts:
    """The lockouts in force when it was read: what a worker checks on its hot path."""

    # (user, address) -> until (epoch seconds)
    addresses: dict[tuple[str, str], float] = field(default_factory=dict)
    # user -> (until, the addresses exempt from it)
    accounts: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)

    def seconds_left(self, user: str, client: str, now: float) -> float | None:
        """How long `client` must wait before logging in as `user`, or None."""
        until = self.addresses.get((user, client))
        if until is not None and until > now:
            return until - now
        account = self.accounts.get(user)
        if account is not None and account[0] > now and client not in account[1]:
            return account[0] - now
        return None


class FailureCounters(Protocol):
    limits: LoginLimits

    """Where the workers of a server (SQLite) or of every replica (Redis) count failed logins."""

    def generation(self) -> int:
        """A number that changes whenever a lockout starts or ends; read on every request."""
        ...

    def lockouts(self, now: float) -> Lockouts: ...

    def begin_attempt(self, user: str, client: str, now: float) -> float | None:
        """Count an attempt before its password is checked; seconds to wait if locked out
        (the attempt is then not counted)."""
        ...

    def record_success(self, user: str, client: str, now: float) -> None:
        """Forget the address's attempts and lockout for `user`; remember the address."""
        ...

    def close(self) -> None:
        """Release connections and threads; the counters reopen them if used again."""
        ...


class SQLiteFailureCounters:
    """Counters in one SQLite file (WAL) in the state folder, for the workers of one machine.

    `create=False` (a gunicorn worker: the master created the files) never creates them:
    while they are missing (the state folder moved away when the worker started) every
    call raises sqlite3.Error, so logins fail closed, and the files are opened once back.

    Not thread-safe: call it from one thread (the auth module gives it its own).
    """

    def __init__(self, db_path: Path, limits: LoginLimits, *, create: bool = True) -> None:
        self.db_path = make_private_database(db_path) if create else db_path
        self.limits = limits
        self._may_create = create
        self._conn: sqlite3.Connection | None = None
        self._generation_path = db_path.with_name(db_path.name + ".generation")
        self._generation: _SharedCounter | None = None
        # Until the files open: 0, which differs from any copy's -1, so the copy is reloaded.
        self._generation_cell = memoryview(bytearray(8)).cast("Q")
        try:
            self._connection()
        except (sqlite3.Error, CountersDiskFull):
            if create:
                raise

    def generation(self) -> int:
        value: int = self._generation_cell[0]  # this runs per request: no further call
        return value

    def lockouts(self, now: float) -> Lockouts:
        conn = self._connection()
        rows = conn.execute(
            "SELECT user, client, until FROM lockouts WHERE until > ?", (now,)
        ).fetchall()
        since = now - self.limits.known_address_seconds
        addresses: dict[tuple[str, str], float] = {}
        accounts: dict[str, tuple[float, frozenset[str]]] = {}
        for user, client, until in rows:
            if client != ANY_ADDRESS:
                addresses[(user, client)] = until
                continue
            known = conn.execute(
                "SELECT client FROM known_addresses WHERE user = ? AND at > ?", (user, since)
            ).fetchall()
            accounts[user] = (until, frozenset(row[0] for row in known))
        return Lockouts(addresses, accounts)

    def begin_attempt(self, user: str, client: str, now: float) -> float | None:
        limits = self.limits
        with self._transaction() as conn:
            wait = self._wait(conn, user, client, now)
            if wait is not None:
                return wait
            conn.execute(
                "INSERT INTO attempts (user, client, at) VALUES (?, ?, ?)", (user, client, now)
            )
            pair = (user, client)
            address_until = max(
                _limit_reached(
                    conn, _NTH_NEWEST_OF_PAIR, pair, now, limits.max_failures, limits.window_seconds
                ),
                _limit_reached(
                    conn,
                    _NTH_NEWEST_OF_PAIR,
                    pair,
                    now,
                    limits.account_max_failures,
                    limits.account_window_seconds,
                ),
            )
            account_until = _limit_reached(
                conn,
                _NTH_NEWEST_OF_USER,
                (user,),
                now,
                limits.account_max_failures,
                limits.account_window_seconds,
            )
            if address_until:
                conn.execute(_LOCK, (user, client, address_until))
            if account_until:
                conn.execute(_LOCK, (user, ANY_ADDRESS, account_until))
            if address_until or account_until:
                self._bump_generation()
            self._forget_old(conn, now)
        return None

    def record_success(self, user: str, client: str, now: float) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM attempts WHERE user = ? AND client = ?", (user, client))
            unlocked = conn.execute(
                "DELETE FROM lockouts WHERE user = ? AND client = ?", (user, client)
            ).rowcount
            conn.execute(_REMEMBER_ADDRESS, (user, client, now))
            # A new known address must reach every worker's copy of a lockout in force.
            account_locked = conn.execute(_LOCKED_UNTIL, (user, ANY_ADDRESS, now)).fetchone()
            if unlocked or account_locked:
                self._bump_generation()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _wait(self, conn: sqlite3.Connection, user: str, client: str, now: float) -> float | None:
        row = conn.execute(_LOCKED_UNTIL, (user, client, now)).fetchone()
        if row is None:
            since = now - self.limits.known_address_seconds
            if conn.execute(_IS_KNOWN, (user, client, since)).fetchone() is None:
                row = conn.execute(_LOCKED_UNTIL, (user, ANY_ADDRESS, now)).fetchone()
        return None if row is None else float(row[0]) - now

    def _forget_old(self, conn: sqlite3.Connection, now: float) -> None:
        limits = self.limits
        horizon = max(limits.window_seconds, limits.account_window_seconds)
        conn.execute("DELETE FROM attempts WHERE at <= ?", (now - horizon,))
        conn.execute("DELETE FROM lockouts WHERE until <= ?", (now,))
        conn.execute(
            "DELETE FROM known_addresses WHERE at <= ?", (now - limits.known_address_seconds,)
        )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # mode=rw unless this process may create: never a fresh file over a missing one.
            mode = "rwc" if self._may_create else "rw"
            conn = sqlite3.connect(
                f"{self.db_path.resolve().as_uri()}?mode={mode}",
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # Counters need not survive a power cut; skipping fsync per commit keeps
                # them cheap.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                if self._generation is None:
                    self._generation = _SharedCounter(self._generation_path, self._may_create)
                    self._generation_cell = self._generation.cell
            except (sqlite3.Error, OSError) as error:
                conn.close()
                if is_disk_full(self.db_path.parent):
                    raise CountersDiskFull(f"no space left for {self.db_path}: {error}") from error
                if isinstance(error, sqlite3.Error):
                    raise
                raise sqlite3.OperationalError(f"{self._generation_path}: {error}") from error
            self._conn = conn
        return self._conn

    def _bump_generation(self) -> None:
        if self._generation is not None:  # always, once a connection opened
            self._generation.increment()

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        # One writer at a time: counting is check-then-insert.
        return write_transaction(self._connection())


def _limit_reached(
    conn: sqlite3.Connection,
    query: str,
    key: tuple[str, ...],
    now: float,
    limit: int,
    window_seconds: float,
) -> float:
    """When the lockout for reaching `limit` ends, or 0.0 when the limit is not reached."""
    row = conn.execute(query, (*key, now - window_seconds, limit - 1)).fetchone()
    return 0.0 if row is None else float(row[0]) + window_seconds


class _SharedCounter:
    """A 64-bit counter in a memory-mapped file: every process sees an increment at once,
    and reading it costs a memory load, not a system call."""

    def __init__(self, path: Path, create: bool) -> None:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), PRIVATE_FILE_MODE)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        self.cell = memoryview(self._map).cast("Q")

    def increment(self) -> None:
        # Callers hold the database's write lock, so increments never race.
        self.cell[0] = (self.cell[0] + 1) % 2**64


class LocalFailureCounts:
    """Failed logins per (user, address) in this worker's memory, sliding window.

    The fallback while the shared counters cannot be written because the disk is full: a
    server on a full disk keeps serving (and throttling, per worker and without the account
    budget) rather than refusing every login. Lockouts already in the shared file still hold.
    """

    def __init__(self, limits: LoginLimits, max_keys: int = 10_000) -> None:
        self.limits = limits
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def begin_attempt(self, user: str, client: str, now: float) -> float | None:
        """Seconds to wait when the limit is reached; else counts this attempt, None."""
        window = self.limits.window_seconds
        times = self._failures.setdefault((user, client), deque())
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= self.limits.max_failures:
            return times[0] + window - now
        times.append(now)
        self._failures.move_to_end((user, client))
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return None

    def record_success(self, user: str, client: str) -> None:
        self._failures.pop((user, client), None)
