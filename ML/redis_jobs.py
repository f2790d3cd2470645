"""Job records in Redis, shared by every API replica and Celery worker (FASTML_BROKER_URL).

The same methods as the SQLite `ML.jobs.JobStore`. A record is one hash; every status
change is one Lua script, so it is a compare-and-set that no other replica or worker can
interleave with. Keys (all under the configured prefix):

- `job:{id}`: the record's fields, absent fields meaning None;
- `jobs`, `jobs:model:{name}`: sorted sets of ids by creation time, for `GET /jobs`;
- `jobs:active`: ids of queued and running jobs, whose uploads are in use.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from enum import StrEnum
from typing import Any

import redis

from ML.errors import JobConflict, StoreUnavailable
from ML.jobs import (
    JobKind,
    JobOptions,
    JobRecord,
    JobStatus,
    _canonical_id,
    _describe,
    _not_found,
    _now_iso,
    _to_json,
    options_from_dict,
)

# Seconds a call may wait for Redis before the job store counts as unavailable.
SOCKET_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0

# KEYS[1] the record, KEYS[2] the active set; ARGV[1] the id. Terminal statuses leave the
# active set in the same script that sets them.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'owner', ARGV[3])
return 1
"""
# ARGV[4]: the owner that must hold the job, or '' for any.
_SUCCEED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'finished_at', ARGV[2], 'result', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""
_FAIL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'error', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""
# ARGV[2] the owner that must hold the running job, ARGV[3] the rows written so far.
_SET_ROWS_DONE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'rows_done', ARGV[3])
return 1
"""
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status ~= 'queued' then return status end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
return 'ok'
"""
# A delivery of the job's task. Queued: count the attempt and run. Running: the attempt
# before died with its worker process (a task is held by one worker at a time), so put it
# back to queued for this attempt, or fail it when the attempts are used up (ARGV[3] the
# limit, ARGV[4] the message). Anything else: finished already, nothing to run.
_START_ATTEMPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' then
    redis.call('HINCRBY', KEYS[1], 'attempts', 1)
    return 'run'
end
if status ~= 'running' then return 'finished' end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'error', ARGV[4])
    redis.call('SREM', KEYS[2], ARGV[1])
    return 'exhausted'
end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'owner', 'started_at')
return 'run'
"""


class Delivery(StrEnum):
    """What a Celery delivery of a job's task should do (`RedisJobStore.start_attempt`)."""

    RUN = "run"
    MISSING = "missing"
    EXHAUSTED = "exhausted"  # the attempts ran out: failed now, with attempts_error
    FINISHED = "finished"  # succeeded, failed or cancelled before this delivery


def attempts_error(attempts: int) -> str:
    return (
        f"the job's worker process died in each of its {attempts} attempts (killed, perhaps "
        "for using too much memory or time); it is not tried again: train with fewer rows "
        "or a lighter estimator"
    )


class RedisJobStore:
    """Job records in Redis; safe from any thread, one connection pool per store."""

    def __init__(self, client: redis.Redis, prefix: str = "fastml:") -> None:
        # Any: the client decodes replies to str (connect), which redis-py's types cannot say.
        self.client: Any = client
        self.prefix = prefix
        self._index = f"{prefix}jobs"
        self._active = f"{prefix}jobs:active"
        self._claim = client.register_script(_CLAIM)
        self._succeed = client.register_script(_SUCCEED)
        self._fail = client.register_script(_FAIL)
        self._set_rows_done = client.register_script(_SET_ROWS_DONE)
        self._cancel = client.register_script(_CANCEL)
        self._start_attempt = client.register_script(_START_ATTEMPT)

    @classmethod
    def from_url(cls, url: str, prefix: str = "fastml:") -> RedisJobStore:
        return cls(connect(url), prefix)

    def create(
        self, model_name: str, options: JobOptions, upload_path: str, owner: str
    ) -> JobRecord:
        job_id = str(uuid.uuid4())
        fields = {
            "id": job_id,
            "kind": options.KIND.value,
            "model_name": model_name,
            "status": JobStatus.QUEUED.value,
            "created_at": _now_iso(),
            "options": _to_json(options.to_dict()),
            "upload_path": upload_path,
            "owner": owner,
        }
        created = time.time()
        with self._redis():
            # MULTI/EXEC: a record is listed exactly when it exists.
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._key(job_id), mapping=fields)
            pipe.zadd(self._index, {job_id: created})
            pipe.zadd(self._model_index(model_name), {job_id: created})
            pipe.sadd(self._active, job_id)
            pipe.execute()
        return _record(fields)

    def get(self, job_id: str) -> JobRecord:
        canonical = _canonical_id(job_id)
        if canonical is not None:
            with self._redis():
                fields = self.client.hgetall(self._key(canonical))
            if fields:
                return _record(fields)
        raise _not_found(job_id)

    def list_recent(self, limit: int, model_name: str | None = None) -> list[JobRecord]:
        """The newest jobs first, optionally only those of one model."""
        if limit <= 0:
            return []
        index = self._index if model_name is None else self._model_index(model_name)
        with self._redis():
            ids = self.client.zrevrange(index, 0, limit - 1)
            records = self._hgetall_each(ids)
        return [_record(fields) for fields in records if fields]

    def claim(self, job_id: str, owner: str) -> bool:
        """Move a queued job to running for `owner`; False if it is not queued any more."""
        return bool(self._run_script(self._claim, job_id, _now_iso(), owner))

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool:
        """Record the result of a running job; False (and no change) if it is not running."""
        return self._finish(self._succeed, job_id, _to_json(result), "")

    def succeed_if_owner(self, job_id: str, owner: str, result: dict[str, Any]) -> bool:
        """Compare-and-set: record success only while the job is running for `owner`."""
        return bool(self._run_script(self._succeed, job_id, _now_iso(), _to_json(result), owner))

    def set_rows_done(self, job_id: str, owner: str, rows: int) -> bool:
        """Record a running job's progress; False (and no change) if it is not `owner`'s
        running job any more."""
        return bool(self._run_script(self._set_rows_done, job_id, owner, rows))

    def fail(self, job_id: str, error: str) -> bool:
        """Fail a queued or running job; False (and no change) if it has already finished."""
        return self._finish(self._fail, job_id, error)

    def cancel(self, job_id: str) -> JobRecord:
        canonical = _canonical_id(job_id)
        if canonical is None:
            raise _not_found(job_id)
        outcome = self._run_script(self._cancel, canonical, _now_iso())
        if outcome == "":
            raise _not_found(job_id)
        if outcome != "ok":
            raise JobConflict(f"{_describe(JobStatus(outcome))}; only queued jobs can be cancelled")
        return self.get(canonical)

    def start_attempt(self, job_id: str, max_attempts: int) -> Delivery:
        """Count a delivery of the job's task; see `_START_ATTEMPT` for what it decides."""
        outcome = self._run_script(
            self._start_attempt, job_id, _now_iso(), max_attempts, attempts_error(max_attempts)
        )
        return Delivery(outcome)

    def upload_paths_in_use(self) -> set[str]:
        """Uploads of queued and running jobs: every other file in the uploads folder is stray."""
        with self._redis():
            ids = self.client.smembers(self._active)
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(self._key(job_id), "upload_path")
            paths = pipe.execute()
        return {path for path in paths if path}

    def forget(self, job_id: str) -> None:
        """Delete a record whose task could not be queued: no half-created job stays."""
        with self._redis():
            fields = self.client.hgetall(self._key(job_id))
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._key(job_id))
            pipe.zrem(self._index, job_id)
            if fields.get("model_name"):
                pipe.zrem(self._model_index(fields["model_name"]), job_id)
            pipe.srem(self._active, job_id)
            pipe.execute()

    def ping(self) -> None:
        """StoreUnavailable unless Redis answers."""
        with self._redis():
            self.client.ping()

    def close(self) -> None:
        self.client.close()

    def _finish(self, script: Any, job_id: str, *args: str) -> bool:
        if self._run_script(script, job_id, _now_iso(), *args):
            return True
        self.get(job_id)  # raises JobNotFound for an unknown id
        return False

    def _run_script(self, script: Any, job_id: str, *args: Any) -> Any:
        with self._redis():
            return script(keys=[self._key(job_id), self._active], args=[job_id, *args])

    def _hgetall_each(self, ids: list[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key(job_id))
        records: list[dict[str, str]] = pipe.execute()
        return records

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _model_index(self, model_name: str) -> str:
        return f"{self.prefix}jobs:model:{model_name}"

    def _redis(self) -> AbstractContextManager[None]:
        return redis_errors(self.client)


def connect(url: str) -> redis.Redis:
    """A client for `url` that gives up in seconds, not minutes, when Redis is away."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


@contextmanager
def redis_errors(client: redis.Redis) -> Iterator[None]:
    """Turn a Redis failure into StoreUnavailable (503 with Retry-After over HTTP)."""
    try:
        yield
    except redis.RedisError as exc:
        kwargs = client.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        raise StoreUnavailable(
            f"Redis at {where} (FASTML_BROKER_URL) cannot be used right now ({exc}); "
            "try again in a moment"
        ) from exc


def _record(fields: dict[str, str]) -> JobRecord:
    def optional_time(name: str) -> datetime | None:
        value = fields.get(name)
        return datetime.fromisoformat(value) if value else None

    result = fields.get("result")
    rows_done = fields.get("rows_done")
    return JobRecord(
        id=fields["id"],
        kind=JobKind(fields["kind"]),
        model_name=fields["model_name"],
        status=JobStatus(fields["status"]),
        created_at=datetime.fromisoformat(fields["created_at"]),
        started_at=optional_time("started_at"),
        finished_at=optional_time("finished_at"),
        options=options_from_dict(fields["kind"], json.loads(fields["options"])),
        upload_path=fields.get("upload_path"),
        owner=fields.get("owner"),
        result=json.loads(result) if result else None,
        error=fields.get("error"),
        rows_done=int(rows_done) if rows_done is not None else None,
    )
