"""Job records (training and batch prediction), shared by every server and job process through
one SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar

from ML.errors import JobConflict, JobNotFound, StorageFull, StoreUnavailable
from ML.private_files import make_private_database
from ML.sqlite_db import is_disk_full, write_transaction

logger = logging.getLogger(__name__)

# Long enough to ride out another process's write transaction (they are all tiny).
BUSY_TIMEOUT_SECONDS = 10.0
# Opening a fresh database: bounded retries of the switch to WAL (see JobStore._open).
OPEN_ATTEMPTS = 50
OPEN_RETRY_SECONDS = 0.1


ORPHAN_ERROR = "the server process running this job stopped; submit the job again"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model_name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    options TEXT NOT NULL,
    upload_path TEXT,
    owner TEXT,
    result TEXT,
    error TEXT,
    rows_done INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs (model_name, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, owner);
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
"""

# Queries are whole literals (no string building), so nothing user-supplied reaches SQL text.
_INSERT = (
    "INSERT INTO jobs (id, kind, model_name, status, created_at, options, upload_path, owner) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_ONE = (
    "SELECT id, kind, model_name, status, created_at, started_at, finished_at, "
    "options, upload_path, owner, result, error, rows_done FROM jobs WHERE id = ?"
)
_SELECT_RECENT = (
    "SELECT id, kind, model_name, status, created_at, started_at, finished_at, "
    "options, upload_path, owner, result, error, rows_done FROM jobs "
    "ORDER BY created_at DESC, rowid DESC LIMIT ?"
)
_SELECT_RECENT_OF_MODEL = (
    "SELECT id, kind, model_name, status, created_at, started_at, finished_at, "
    "options, upload_path, owner, result, error, rows_done FROM jobs WHERE model_name = ? "
    "ORDER BY created_at DESC, rowid DESC LIMIT ?"
)
_SELECT_ORPHANS = (
    "SELECT id, status FROM jobs WHERE status IN ('queued', 'running') "
    "AND (owner IS NULL OR owner NOT IN (SELECT owner FROM owners WHERE heartbeat_at >= ?)) "
    "ORDER BY created_at, rowid"
)
_HEARTBEAT = (
    "INSERT INTO owners (owner, heartbeat_at) VALUES (?, ?) "
    "ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)
_SUCCEED = (
    "UPDATE jobs SET status = 'succeeded', finished_at = ?, result = ? "
    "WHERE id = ? AND status = 'running'"
)
_SUCCEED_IF_OWNER = (
    "UPDATE jobs SET status = 'succeeded', finished_at = ?, result = ? "
    "WHERE id = ? AND status = 'running' AND owner = ?"
)
_SET_ROWS_DONE = "UPDATE jobs SET rows_done = ? WHERE id = ? AND status = 'running' AND owner = ?"
_SELECT_UPLOADS_IN_USE = (
    "SELECT upload_path FROM jobs WHERE status IN ('queued', 'running') AND upload_path IS NOT NULL"
)
_FAIL = (
    "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? "
    "WHERE id = ? AND status IN ('queued', 'running')"
)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobKind(StrEnum):
    """What a job does; each kind has its own options class and job function."""

    TRAIN = "train"
    PREDICT = "predict"


@dataclass(frozen=True)
class TrainingJobOptions:
    """What a training job was asked for; stored as JSON with its record, read back typed.

    The estimator fields become ML.training.TrainingOptions in the job process (this module
    stays free of scikit-learn, which a job process loads only after limiting its threads).
    """

    KIND: ClassVar[JobKind] = JobKind.TRAIN

    target_variable: str
    estimator: str
    params: Mapping[str, Any] = field(default_factory=dict)
    test_size: float | None = None
    cv: int | None = None
    promote: bool = True
    filename: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "params": dict(self.params),
            "test_size": self.test_size,
            "cv": self.cv,
            "promote": self.promote,
            "target_variable": self.target_variable,
            "filename": self.filename,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingJobOptions:
        return cls(
            target_variable=data["target_variable"],
            estimator=data["estimator"],
            params=data.get("params") or {},
            test_size=data.get("test_size"),
            cv=data.get("cv"),
            promote=bool(data.get("promote", True)),
            filename=data.get("filename"),
        )


@dataclass(frozen=True)
class PredictionJobOptions:
    """What a batch-prediction job was asked for: the model version it was submitted against
    (pinned, so the file is predicted by the version checked at submit time), whether to add
    probability columns, and who submitted it (a predictor reads only its own jobs)."""

    KIND: ClassVar[JobKind] = JobKind.PREDICT

    version: int
    with_probabilities: bool = False
    submitted_by: str | None = None
    filename: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "proba": self.with_probabilities,
            "submitted_by": self.submitted_by,
            "filename": self.filename,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictionJobOptions:
        return cls(
            version=int(data["version"]),
            with_probabilities=bool(data.get("proba", False)),
            submitted_by=data.get("submitted_by"),
            filename=data.get("filename"),
        )


JobOptions: TypeAlias = TrainingJobOptions | PredictionJobOptions
_OPTIONS_BY_KIND: dict[JobKind, type[TrainingJobOptions] | type[PredictionJobOptions]] = {
    options.KIND: options for options in (TrainingJobOptions, PredictionJobOptions)
}
_Options = TypeVar("_Options", TrainingJobOptions, PredictionJobOptions)


def options_from_dict(kind: str, data: Mapping[str, Any]) -> JobOptions:
    """A stored job's options, typed by its kind."""
    return _OPTIONS_BY_KIND[JobKind(kind)].from_dict(data)


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: JobKind
    model_name: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    options: JobOptions
    upload_path: str | None
    owner: str | None
    result: dict[str, Any] | None
    error: str | None
    rows_done: int | None = None  # batch prediction: rows written so far

    def options_as(self, options_class: type[_Options]) -> _Options:
        """The options, checked to be of the class a job function expects."""
        if not isinstance(self.options, options_class):
            raise TypeError(
                f"job {self.id} is a {self.kind.value} job, not a {options_class.KIND.value} job"
            )
        return self.options

    def to_dict(self) -> dict[str, Any]:
        """The client's view: JSON-friendly, without server-side paths and process names."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "model_name": self.model_name,
            "status": self.status.value,
            "created_at": self.created_at.isoformat(),
            "started_at": _iso_or_none(self.started_at),
            "finished_at": _iso_or_none(self.finished_at),
            "options": self.options.to_dict(),
            "result": self.result,
            "error": self.error,
            "rows_done": self.rows_done,
        }


class JobRecords(Protocol):
    """What the server, the job function and the commit need of a job store: SQLite
    (`JobStore`, the embedded default) or Redis (`ML.redis_jobs.RedisJobStore`).
    `Settings.open_job_store` picks one. Every status change is a compare-and-set."""

    def create(
        self, model_name: str, options: JobOptions, upload_path: str, owner: str
    ) -> JobRecord: ...

    def get(self, job_id: str) -> JobRecord: ...

    def list_recent(self, limit: int, model_name: str | None = None) -> list[JobRecord]: ...

    def claim(self, job_id: str, owner: str) -> bool: ...

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool: ...

    def succeed_if_owner(self, job_id: str, owner: str, result: dict[str, Any]) -> bool: ...

    def set_rows_done(self, job_id: str, owner: str, rows: int) -> bool: ...

    def upload_paths_in_use(self) -> set[str]: ...

    def fail(self, job_id: str, error: str) -> bool: ...

    def cancel(self, job_id: str) -> JobRecord: ...


async def wait_until_finished(jobs: JobRecords, job_id: str, timeout: float) -> JobRecord:
    """Poll `jobs` until the job has finished; TimeoutError past `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    while True:
        job = await asyncio.to_thread(jobs.get, job_id)
        if job.status.is_terminal:
            return job
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(
                f"job {job_id} is still {job.status} after {timeout:g} s; ask for it again later"
            )
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.5)


class JobStore:
    """Job records in one SQLite file; every call opens its own connection.

    A connection per call keeps the store safe from any thread (asyncio's to_thread pool)
    and picklable into job processes; opening a SQLite file costs microseconds.
    """

    def __init__(self, db_path: Path, *, create: bool = True) -> None:
        """`create=False` (job processes) never makes a database: one that went missing at
        run time is reported, not replaced by an empty one. The file is opened on first
        use, so a server starts (and serves predictions) on a full or read-only disk."""
        self.db_path = Path(db_path)
        self._may_create = create
        self._is_open = False

    def create(
        self, model_name: str, options: JobOptions, upload_path: str, owner: str
    ) -> JobRecord:
        """Queue a job; its kind is that of its options."""
        job_id = str(uuid.uuid4())
        with self._connect() as conn:
            conn.execute(
                _INSERT,
                (
                    job_id,
                    options.KIND.value,
                    model_name,
                    JobStatus.QUEUED.value,
                    _now_iso(),
                    _to_json(options.to_dict()),
                    upload_path,
                    owner,
                ),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        canonical = _canonical_id(job_id)
        if canonical is not None:
            with self._connect() as conn:
                row = conn.execute(_SELECT_ONE, (canonical,)).fetchone()
            if row is not None:
                return _record(row)
        raise _not_found(job_id)

    def list_recent(self, limit: int, model_name: str | None = None) -> list[JobRecord]:
        """The newest jobs first, optionally only those of one model."""
        limit = max(limit, 0)
        with self._connect() as conn:
            if model_name is None:
                rows = conn.execute(_SELECT_RECENT, (limit,)).fetchall()
            else:
                rows = conn.execute(_SELECT_RECENT_OF_MODEL, (model_name, limit)).fetchall()
        return [_record(row) for row in rows]

    def claim(self, job_id: str, owner: str) -> bool:
        """Move a queued job to running for `owner`; False if it is not queued any more."""
        with self._connect() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = ?, started_at = ?, owner = ? WHERE id = ? AND status = ?",
                (JobStatus.RUNNING.value, _now_iso(), owner, job_id, JobStatus.QUEUED.value),
            )
        return cursor.rowcount == 1

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool:
        """Record the result of a running job; False (and no change) if it is not running."""
        return self._finish(job_id, _SUCCEED, _to_json(result), JobStatus.SUCCEEDED)

    def succeed_if_owner(self, job_id: str, owner: str, result: dict[str, Any]) -> bool:
        """Compare-and-set: record success only while the job is running for `owner`.

        The commit guard of every executor (see ML/job_commit.py): a job failed meanwhile,
        or taken over by another owner, refuses, and its trained version is discarded.
        """
        with self._connect() as conn:
            cursor = conn.execute(_SUCCEED_IF_OWNER, (_now_iso(), _to_json(result), job_id, owner))
        return cursor.rowcount == 1

    def set_rows_done(self, job_id: str, owner: str, rows: int) -> bool:
        """Record a running job's progress; False (and no change) if it is not `owner`'s
        running job any more."""
        with self._connect() as conn:
            cursor = conn.execute(_SET_ROWS_DONE, (rows, job_id, owner))
        return cursor.rowcount == 1

    def upload_paths_in_use(self) -> set[str]:
        """Uploads of queued and running jobs: every other file in the uploads folder is stray."""
        with self._connect() as conn:
            rows = conn.execute(_SELECT_UPLOADS_IN_USE).fetchall()
        return {path for (path,) in rows}

    def fail(self, job_id: str, error: str) -> bool:
        """Fail a queued or running job; False (and no change) if it has already finished."""
        return self._finish(job_id, _FAIL, error, JobStatus.FAILED)

    def cancel(self, job_id: str) -> JobRecord:
        canonical = _canonical_id(job_id)
        if canonical is None:
            raise _not_found(job_id)
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (canonical,)).fetchone()
            if row is None:
                raise _not_found(job_id)
            status = JobStatus(row[0])
            if status is not JobStatus.QUEUED:
                raise JobConflict(f"{_describe(status)}; only queued jobs can be cancelled")
            conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?",
                (JobStatus.CANCELLED.value, _now_iso(), canonical),
            )
        return self.get(canonical)

    def heartbeat(self, owner: str) -> None:
        """Record that the server process `owner` is alive and answers for its jobs."""
        with self._connect() as conn:
            conn.execute(_HEARTBEAT, (owner, time.time()))

    def retire(self, owner: str) -> None:
        """Forget a server process that shut down, so live peers take its queued jobs at once."""
        with self._connect() as conn:
            conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))

    def recover_orphans(
        self, stale_after_seconds: float, new_owner: str
    ) -> tuple[list[str], list[str]]:
        """Take over the jobs of server processes that stopped heart-beating.

        Their running jobs are failed (the process that ran them is gone); their queued jobs
        move to `new_owner`, which must submit them again (and counts as alive from now on).
        One transaction, so two recovering processes never take the same job.
        Returns (failed_ids, requeued_ids).
        """
        cutoff = time.time() - stale_after_seconds
        with self._transaction() as conn:
            # The recovering process is alive by definition; saying so in the same
            # transaction keeps a racing recoverer from taking these jobs back.
            conn.execute(_HEARTBEAT, (new_owner, time.time()))
            rows = conn.execute(_SELECT_ORPHANS, (cutoff,)).fetchall()
            failed = [job_id for job_id, status in rows if status == JobStatus.RUNNING.value]
            requeued = [job_id for job_id, status in rows if status == JobStatus.QUEUED.value]
            now = _now_iso()
            conn.executemany(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                [(JobStatus.FAILED.value, now, ORPHAN_ERROR, job_id) for job_id in failed],
            )
            conn.executemany(
                "UPDATE jobs SET owner = ? WHERE id = ?",
                [(new_owner, job_id) for job_id in requeued],
            )
            # Stale owners own nothing active any more; drop them so the table stays small.
            conn.execute(
                "DELETE FROM owners WHERE heartbeat_at < ? AND owner != ?", (cutoff, new_owner)
            )
        if failed or requeued:
            logger.warning(
                "recovered jobs of stopped server processes: failed %s, requeued %s",
                failed,
                requeued,
            )
        return failed, requeued

    def _finish(self, job_id: str, query: str, outcome: str | None, status: JobStatus) -> bool:
        with self._connect() as conn:
            cursor = conn.execute(query, (_now_iso(), outcome, job_id))
        if cursor.rowcount == 1:
            return True
        current = self.get(job_id)  # raises JobNotFound for an unknown id
        logger.warning("job %s is already %s; not marking it %s", job_id, current.status, status)
        return False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._is_open:
            self._open()
        try:
            # Autocommit: each statement is its own transaction unless _transaction opens one.
            # mode=rw: a database file that went away is an error, never a fresh empty one.
            conn = sqlite3.connect(
                f"{self.db_path.resolve().as_uri()}?mode=rw",
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                uri=True,
            )
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            raise self._unusable(exc) from exc
        finally:
            conn.close()

    def _open(self) -> None:
        try:
            if self._may_create:
                make_private_database(self.db_path)  # 0600 in a 0700 folder, WAL files too
            mode = "rwc" if self._may_create else "rw"
            uri = f"{self.db_path.resolve().as_uri()}?mode={mode}"
            for attempt in range(1, OPEN_ATTEMPTS + 1):
                try:
                    _initialise(uri)
                    break
                except sqlite3.OperationalError as exc:
                    # Several processes opening a fresh file switch it to WAL at once, and
                    # that switch can fail at once with "locked": SQLite's busy timeout does
                    # not cover it. The others finish within moments; try again.
                    if "locked" not in str(exc) or attempt == OPEN_ATTEMPTS:
                        raise
                    time.sleep(OPEN_RETRY_SECONDS)
        except (sqlite3.Error, OSError) as exc:
            raise self._unusable(exc) from exc
        self._is_open = True

    def _unusable(self, error: Exception) -> StorageFull | StoreUnavailable:
        """The domain error for a database that cannot be used: a full disk, or a missing file."""
        if "full" in str(error) or is_disk_full(self.db_path.parent):
            return StorageFull(
                f"no space left for the job database at {self.db_path}; free space on that disk"
            )
        return StoreUnavailable(
            f"the job database at {self.db_path} cannot be used ({error}); check that its "
            "folder exists and is writable"
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front, so read-then-write steps cannot interleave."""
        with self._connect() as conn, write_transaction(conn):
            yield conn


def _initialise(uri: str) -> None:
    conn = sqlite3.connect(uri, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, uri=True)
    try:
        # WAL lets readers (GET /jobs) run while a job process writes.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        _add_missing_columns(conn)
    finally:
        conn.close()


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a job database made by an earlier version up to date (columns only get added)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "rows_done" not in present:
        try:
            conn.execute("ALTER TABLE jobs ADD COLUMN rows_done INTEGER")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it just now
                raise


def _record(row: tuple[Any, ...]) -> JobRecord:
    (
        job_id,
        kind,
        model_name,
        status,
        created_at,
        started_at,
        finished_at,
        options,
        upload_path,
        owner,
        result,
        error,
        rows_done,
    ) = row
    return JobRecord(
        id=job_id,
        kind=JobKind(kind),
        model_name=model_name,
        status=JobStatus(status),
        created_at=datetime.fromisoformat(created_at),
        started_at=_datetime_or_none(started_at),
        finished_at=_datetime_or_none(finished_at),
        options=options_from_dict(kind, json.loads(options)),
        upload_path=upload_path,
        owner=owner,
        result=None if result is None else json.loads(result),
        error=error,
        rows_done=rows_done,
    )


def _canonical_id(job_id: str) -> str | None:
    """The stored form of a job id, or None when it is not a UUID at all."""
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, TypeError, AttributeError):
        return None


def _not_found(job_id: str) -> JobNotFound:
    shown = job_id if len(job_id) <= 64 else job_id[:64] + "..."
    return JobNotFound(f"job '{shown}' not found")


def _describe(status: JobStatus) -> str:
    if status is JobStatus.RUNNING:
        return "job is running"
    if status is JobStatus.CANCELLED:
        return "job is already cancelled"
    return f"job has already {status.value}"


def _to_json(value: dict[str, Any]) -> str:
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    # Metrics may hold numpy scalars or arrays; both know how to become plain Python.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in a job record")


def _now_iso() -> str:
    # A fixed format (always with microseconds) keeps text order equal to time order.
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _datetime_or_none(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
