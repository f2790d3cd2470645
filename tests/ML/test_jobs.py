"""Job records in a real SQLite file, shared by threads and spawned processes."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from ML.errors import JobConflict, JobNotFound
from ML.jobs import ORPHAN_ERROR, JobRecord, JobStatus, JobStore, TrainingJobOptions

OPTIONS = TrainingJobOptions(
    target_variable="species",
    estimator="random_forest",
    params={"n_estimators": 5},
    test_size=0.25,
    promote=False,
    filename="train.csv",
)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "state" / "jobs.sqlite3")


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessPoolExecutor]:
    """Four spawned processes, like gunicorn workers and their job processes."""
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def create(store: JobStore, model_name: str = "iris", owner: str = "server-a") -> JobRecord:
    return store.create(model_name, OPTIONS, f"/uploads/{uuid.uuid4()}.csv", owner)


def test_create_records_a_queued_job(store: JobStore) -> None:
    job = store.create("iris", OPTIONS, "/uploads/a.csv", "server-a")

    assert uuid.UUID(job.id).version == 4
    assert job.kind == "train"
    assert job.status is JobStatus.QUEUED
    assert job.created_at.utcoffset() is not None
    assert (job.started_at, job.finished_at, job.result, job.error) == (None, None, None, None)
    assert job.options == OPTIONS
    assert job.upload_path == "/uploads/a.csv"
    assert job.owner == "server-a"
    assert store.get(job.id) == job


def test_to_dict_is_json_without_server_details(store: JobStore) -> None:
    job = create(store)
    store.claim(job.id, "server-a")
    store.succeed(job.id, {"version": 1, "metrics": {"accuracy": 1.0}, "promoted": True})

    view = store.get(job.id).to_dict()

    assert json.loads(json.dumps(view)) == view
    assert view["status"] == "succeeded"
    assert view["result"] == {"version": 1, "metrics": {"accuracy": 1.0}, "promoted": True}
    assert "upload_path" not in view
    assert "owner" not in view


def test_options_round_trip_typed_through_the_store(store: JobStore) -> None:
    job = create(store)

    assert store.get(job.id).options == OPTIONS
    assert job.to_dict()["options"] == {
        "estimator": "random_forest",
        "params": {"n_estimators": 5},
        "test_size": 0.25,
        "cv": None,
        "promote": False,
        "target_variable": "species",
        "filename": "train.csv",
    }
    assert TrainingJobOptions.from_dict(job.to_dict()["options"]) == OPTIONS


def test_a_second_store_on_the_same_file_sees_the_jobs(store: JobStore) -> None:
    job = create(store)

    assert JobStore(store.db_path).get(job.id) == job


@pytest.mark.parametrize(
    "job_id", [str(uuid.uuid4()), "not-a-uuid", "", "../../etc/passwd", "1" * 500]
)
def test_get_unknown_or_malformed_id_is_not_found(store: JobStore, job_id: str) -> None:
    create(store)

    with pytest.raises(JobNotFound, match=r"^job '.*' not found$"):
        store.get(job_id)


def test_list_recent_is_newest_first_with_limit_and_model_filter(store: JobStore) -> None:
    created = [create(store, model_name) for model_name in ["iris", "wine", "iris", "iris"]]

    assert [job.id for job in store.list_recent(10)] == [job.id for job in reversed(created)]
    assert [job.id for job in store.list_recent(2)] == [created[3].id, created[2].id]
    assert [job.id for job in store.list_recent(10, "iris")] == [
        created[3].id,
        created[2].id,
        created[0].id,
    ]
    assert store.list_recent(10, "unknown") == []
    assert store.list_recent(0) == []


def test_claim_moves_a_queued_job_to_running_once(store: JobStore) -> None:
    job = create(store)

    assert store.claim(job.id, "server-b") is True
    assert store.claim(job.id, "server-c") is False

    running = store.get(job.id)
    assert running.status is JobStatus.RUNNING
    assert running.owner == "server-b"
    assert running.started_at is not None


def test_claim_refuses_a_cancelled_job(store: JobStore) -> None:
    job = create(store)
    store.cancel(job.id)

    assert store.claim(job.id, "server-a") is False
    assert store.get(job.id).status is JobStatus.CANCELLED


def test_succeed_and_fail_record_the_outcome_once(store: JobStore) -> None:
    winner, loser = create(store), create(store)
    for job in (winner, loser):
        store.claim(job.id, "server-a")

    assert store.succeed(winner.id, {"version": 3, "metrics": {}, "promoted": False}) is True
    assert store.fail(loser.id, "column 'species' not found") is True
    # A finished job keeps its outcome: a late report from a lost process changes nothing.
    assert store.fail(winner.id, "too late") is False
    assert store.succeed(loser.id, {"version": 4, "metrics": {}, "promoted": True}) is False

    succeeded, failed = store.get(winner.id), store.get(loser.id)
    assert succeeded.status is JobStatus.SUCCEEDED
    assert succeeded.result == {"version": 3, "metrics": {}, "promoted": False}
    assert succeeded.error is None
    assert succeeded.finished_at is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error == "column 'species' not found"
    assert failed.result is None


def test_a_queued_job_can_fail_before_it_starts(store: JobStore) -> None:
    job = create(store)

    assert store.fail(job.id, "could not start") is True
    assert store.get(job.id).status is JobStatus.FAILED


def test_cancel_a_queued_job(store: JobStore) -> None:
    job = create(store)

    cancelled = store.cancel(job.id)

    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert store.get(job.id) == cancelled


def test_cancel_a_running_or_finished_job_is_a_conflict(store: JobStore) -> None:
    running, finished = create(store), create(store)
    store.claim(running.id, "server-a")
    store.claim(finished.id, "server-a")
    store.succeed(finished.id, {"version": 1, "metrics": {}, "promoted": True})

    with pytest.raises(JobConflict) as error:
        store.cancel(running.id)
    assert error.value.message == "job is running; only queued jobs can be cancelled"
    with pytest.raises(JobConflict, match="already succeeded; only queued jobs"):
        store.cancel(finished.id)
    assert store.get(running.id).status is JobStatus.RUNNING


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "nope"])
def test_cancel_an_unknown_job_is_not_found(store: JobStore, job_id: str) -> None:
    with pytest.raises(JobNotFound, match=f"^job '{job_id}' not found$"):
        store.cancel(job_id)


def test_recover_orphans_takes_over_the_jobs_of_stopped_owners(store: JobStore) -> None:
    store.heartbeat("stale")
    stale_running, stale_queued = create(store, owner="stale"), create(store, owner="stale")
    unknown_running, unknown_queued = create(store, owner="gone"), create(store, owner="gone")
    alive_running, alive_queued = create(store, owner="alive"), create(store, owner="alive")
    stale_done = create(store, owner="stale")
    for job in (stale_running, unknown_running, alive_running, stale_done):
        store.claim(job.id, job.owner or "")
    store.succeed(stale_done.id, {"version": 1, "metrics": {}, "promoted": True})

    time.sleep(1.0)  # ages the stale owner's heartbeat well past stale_after_seconds
    store.heartbeat("alive")

    failed, requeued = store.recover_orphans(0.5, "new")

    assert sorted(failed) == sorted([stale_running.id, unknown_running.id])
    assert sorted(requeued) == sorted([stale_queued.id, unknown_queued.id])
    for job_id in failed:
        job = store.get(job_id)
        assert (job.status, job.error) == (JobStatus.FAILED, ORPHAN_ERROR)
    for job_id in requeued:
        assert (store.get(job_id).status, store.get(job_id).owner) == (JobStatus.QUEUED, "new")
    assert store.get(alive_running.id).status is JobStatus.RUNNING
    assert store.get(alive_queued.id).owner == "alive"
    assert store.get(stale_done.id).status is JobStatus.SUCCEEDED
    # The recoverer counts as alive from now on, so a second pass finds nothing.
    assert store.recover_orphans(60, "other") == ([], [])


def test_a_retired_owner_is_recovered_at_once(store: JobStore) -> None:
    store.heartbeat("leaving")
    job = create(store, owner="leaving")
    assert store.recover_orphans(60, "peer") == ([], [])

    store.retire("leaving")

    assert store.recover_orphans(60, "peer") == ([], [job.id])


def test_claim_race_between_processes_has_one_winner(
    store: JobStore, processes: ProcessPoolExecutor
) -> None:
    jobs = [create(store) for _ in range(20)]
    attempts = [
        (job.id, processes.submit(store.claim, job.id, f"claimer-{n}"))
        for job in jobs
        for n in range(4)
    ]

    wins: dict[str, int] = {job.id: 0 for job in jobs}
    for job_id, future in attempts:
        wins[job_id] += future.result(timeout=60)

    assert set(wins.values()) == {1}
    assert {job.status for job in store.list_recent(100)} == {JobStatus.RUNNING}


def test_recover_race_between_processes_takes_each_job_once(
    store: JobStore, processes: ProcessPoolExecutor
) -> None:
    queued = [create(store, owner="gone") for _ in range(30)]
    running = [create(store, owner="gone") for _ in range(10)]
    for job in running:
        store.claim(job.id, "gone")

    futures = [processes.submit(store.recover_orphans, 10, f"recoverer-{n}") for n in range(4)]
    outcomes = [future.result(timeout=60) for future in futures]

    failed = [job_id for failed_ids, _ in outcomes for job_id in failed_ids]
    requeued = [job_id for _, requeued_ids in outcomes for job_id in requeued_ids]
    assert sorted(failed) == sorted(job.id for job in running)
    assert sorted(requeued) == sorted(job.id for job in queued)
    for (_, requeued_ids), n in zip(outcomes, range(4), strict=True):
        assert {store.get(job_id).owner for job_id in requeued_ids} <= {f"recoverer-{n}"}


def test_concurrent_writers_in_several_processes(
    tmp_path: Path, processes: ProcessPoolExecutor
) -> None:
    db_path = tmp_path / "fresh" / "jobs.sqlite3"
    # Each process opens the file itself: the schema is created concurrently too.
    stores = [processes.submit(JobStore, db_path) for _ in range(4)]
    store = stores[0].result(timeout=60)
    for future in stores[1:]:
        future.result(timeout=60)

    created = list(
        processes.map(
            partial(store.create, "iris", OPTIONS, "/uploads/x.csv"),
            [f"server-{n % 4}" for n in range(120)],
            timeout=60,
        )
    )
    claims = list(processes.map(store.claim, [job.id for job in created], ["w"] * 120, timeout=60))
    beats = list(processes.map(store.heartbeat, [f"server-{n}" for n in range(40)], timeout=60))
    fails = list(processes.map(store.fail, [job.id for job in created], ["x"] * 120, timeout=60))

    assert all(claims)
    assert all(fails)
    assert len(beats) == 40
    records = store.list_recent(500)
    assert len(records) == 120
    assert {job.status for job in records} == {JobStatus.FAILED}
