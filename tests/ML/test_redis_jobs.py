"""Job records in a real Redis: the same answers as the SQLite store, compare-and-set included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ML.errors import JobConflict, JobNotFound, StoreUnavailable
from ML.jobs import JobStatus, TrainingJobOptions
from ML.redis_jobs import Delivery, RedisJobStore, attempts_error
from tests.redis_fixture import RedisServer

OPTIONS = TrainingJobOptions(
    target_variable="species", estimator="random_forest", params={"n_estimators": 5}
)


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> Iterator[RedisJobStore]:
    jobs = RedisJobStore.from_url(redis_url, redis_prefix)
    yield jobs
    jobs.close()


def test_create_get_and_list_like_the_sqlite_store(store: RedisJobStore) -> None:
    first = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
    second = store.create("wine", OPTIONS, "/uploads/b.csv", "api-2")

    assert store.get(first.id) == first
    assert first.status is JobStatus.QUEUED
    assert first.options == OPTIONS
    assert (first.started_at, first.finished_at, first.result, first.error) == (None,) * 4
    assert [job.id for job in store.list_recent(10)] == [second.id, first.id]
    assert [job.id for job in store.list_recent(1)] == [second.id]
    assert [job.id for job in store.list_recent(10, model_name="iris")] == [first.id]
    assert store.list_recent(10, model_name="none") == []
    assert store.upload_paths_in_use() == {"/uploads/a.csv", "/uploads/b.csv"}


def test_unknown_and_malformed_ids_are_not_found(store: RedisJobStore) -> None:
    for job_id in (str(uuid.uuid4()), "not-a-uuid", "x" * 500):
        with pytest.raises(JobNotFound):
            store.get(job_id)
        with pytest.raises(JobNotFound):
            store.cancel(job_id)
    with pytest.raises(JobNotFound):
        store.fail(str(uuid.uuid4()), "no")


def test_status_changes_are_compare_and_set(store: RedisJobStore) -> None:
    job = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")

    assert store.claim(job.id, "worker-a")
    assert not store.claim(job.id, "worker-b")
    assert not store.succeed_if_owner(job.id, "worker-b", {"version": 9})
    assert store.succeed_if_owner(job.id, "worker-a", {"version": 1})
    assert not store.succeed_if_owner(job.id, "worker-a", {"version": 2})
    assert not store.fail(job.id, "too late")

    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"version": 1}
    assert done.owner == "worker-a"
    assert done.started_at is not None and done.finished_at is not None
    assert store.upload_paths_in_use() == set()


def test_only_one_of_many_racing_owners_commits(store: RedisJobStore) -> None:
    job = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
    assert store.claim(job.id, "worker-0")
    with ThreadPoolExecutor(8) as pool:
        wins = list(
            pool.map(
                lambda n: store.succeed_if_owner(job.id, "worker-0", {"version": n}), range(32)
            )
        )
    assert wins.count(True) == 1


def test_only_queued_jobs_can_be_cancelled(store: RedisJobStore) -> None:
    queued = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
    running = store.create("iris", OPTIONS, "/uploads/b.csv", "api-1")
    store.claim(running.id, "worker-a")

    cancelled = store.cancel(queued.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert not store.claim(queued.id, "worker-a")  # a cancelled job never starts
    assert store.start_attempt(queued.id, 3) is Delivery.FINISHED
    with pytest.raises(JobConflict, match="job is running; only queued jobs can be cancelled"):
        store.cancel(running.id)
    with pytest.raises(JobConflict, match="already cancelled"):
        store.cancel(queued.id)


def test_deliveries_count_attempts_and_fail_past_the_limit(store: RedisJobStore) -> None:
    job = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
    for attempt in range(1, 4):
        assert store.start_attempt(job.id, 3) is Delivery.RUN
        assert store.claim(job.id, f"worker-{attempt}")  # then its process dies

    assert store.start_attempt(job.id, 3) is Delivery.EXHAUSTED
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == attempts_error(3)
    assert "3 attempts" in (failed.error or "")
    assert store.start_attempt(job.id, 3) is Delivery.FINISHED
    assert store.start_attempt(str(uuid.uuid4()), 3) is Delivery.MISSING


def test_a_redelivered_task_of_a_committed_job_does_nothing(store: RedisJobStore) -> None:
    job = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
    assert store.start_attempt(job.id, 3) is Delivery.RUN
    assert store.claim(job.id, "worker-a")
    assert store.succeed_if_owner(job.id, "worker-a", {"version": 1})

    assert store.start_attempt(job.id, 3) is Delivery.FINISHED
    assert store.get(job.id).result == {"version": 1}


def test_a_retried_attempt_takes_the_job_from_the_dead_owner(store: RedisJobStore) -> None:
    job = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
    store.start_attempt(job.id, 3)
    store.claim(job.id, "worker-dead")
    assert store.start_attempt(job.id, 3) is Delivery.RUN
    assert store.claim(job.id, "worker-new")
    # Were the first owner still alive somewhere, its commit is refused.
    assert not store.succeed_if_owner(job.id, "worker-dead", {"version": 1})
    assert store.succeed_if_owner(job.id, "worker-new", {"version": 1})


def test_forget_leaves_no_trace(store: RedisJobStore) -> None:
    job = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
    store.forget(job.id)
    with pytest.raises(JobNotFound):
        store.get(job.id)
    assert store.list_recent(10) == []
    assert store.upload_paths_in_use() == set()


def test_redis_going_away_is_store_unavailable(private_redis: RedisServer) -> None:
    store = RedisJobStore.from_url(private_redis.url)
    try:
        job = store.create("iris", OPTIONS, "/uploads/a.csv", "api-1")
        private_redis.stop()
        with pytest.raises(StoreUnavailable, match=r"Redis at 127\.0\.0\.1"):
            store.get(job.id)
        with pytest.raises(StoreUnavailable):
            store.create("iris", OPTIONS, "/uploads/b.csv", "api-1")
        private_redis.start()  # append-only: the record survived the restart
        assert store.get(job.id) == job
    finally:
        store.close()
