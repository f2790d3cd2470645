"""Jobs: the job function every executor calls, and the in-server process pool."""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import multiprocessing
import multiprocessing.queues
import os
import queue
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ML.config import Settings
from ML.errors import FastMLError, InvalidDataset, StorageFull, StoreUnavailable
from ML.jobs import (
    JobKind,
    JobRecord,
    JobRecords,
    JobStatus,
    JobStore,
    TrainingJobOptions,
    wait_until_finished,
)

if TYPE_CHECKING:
    from ML.model_store import ModelStore

logger = logging.getLogger(__name__)

# BLAS and OpenMP read these once, when they load: one core per training process.
THREAD_LIMIT_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
HEARTBEAT_SECONDS = 2.0
# Five missed heartbeats before another server process takes over this one's jobs.
STALE_AFTER_SECONDS = 10.0
# How often one job is handed to a fresh pool after pools broke before it could start.
MAX_SUBMIT_ATTEMPTS = 3

BROKEN_POOL_ERROR = (
    "the job's process stopped unexpectedly (killed, perhaps for using too much memory); "
    "submit the job again, with fewer rows or a lighter estimator if it happens again"
)


# What a job function does once its job is claimed: the job's result, or None when the job
# stopped being the owner's meanwhile (nothing was committed). Raises FastMLError for a
# failure the client can fix.
JobWork: TypeAlias = Callable[[JobRecord, Settings, JobRecords, str], dict[str, Any] | None]


def run_job(
    job_id: str, settings: Settings | None = None, owner: str | None = None
) -> dict[str, Any] | None:
    """Run one queued job of any kind: the one function every executor calls.

    Module-level with picklable arguments, so the embedded process pool and a Celery
    worker call the same function; it hands the job to its kind's function. `owner` is the
    server process answering for the job's liveness (its heartbeat); None keeps the owner
    recorded with the job.
    """
    settings = settings or Settings()
    kind = settings.open_job_store(create=False).get(job_id).kind
    if kind is JobKind.PREDICT:
        # Imported here: it loads numpy, which a pool process loads only after limiting threads.
        from ML.prediction_jobs import run_prediction_job

        return run_prediction_job(job_id, settings, owner)
    return run_training_job(job_id, settings, owner)


def run_training_job(
    job_id: str, settings: Settings | None = None, owner: str | None = None
) -> dict[str, Any] | None:
    """Train, store and record one queued training job; None when it was not queued any more."""
    return run_claimed(job_id, settings or Settings(), owner, _train)


def run_claimed(
    job_id: str, settings: Settings, owner: str | None, work: JobWork
) -> dict[str, Any] | None:
    """Claim a queued job, run `work` on it, and record a failure; what every kind shares.

    None when the job was not queued any more, or `work` found it was no longer this
    owner's. The upload is deleted before a failure is recorded, so whoever sees the
    outcome sees no upload (`work` deletes it before it commits a success).
    """
    jobs = settings.open_job_store(create=False)
    job = jobs.get(job_id)
    claimed_by = owner or job.owner or process_owner()
    if not jobs.claim(job_id, claimed_by):
        _skip_unclaimed(jobs, job_id)
        return None
    logger.info("job %s started: %s model %r", job_id, job.kind.value, job.model_name)

    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        result = work(job, settings, jobs, claimed_by)
    except FastMLError as exc:
        # The message is in the job record; it may quote a CSV cell, so the log does not.
        logger.info("job %s failed: %s", job_id, type(exc).__name__)
        error = exc.message
    except Exception as exc:
        logger.exception("job %s failed with an internal error", job_id)
        error = f"internal error: {type(exc).__name__}: {exc}"
    delete_upload(job.upload_path)

    if error is not None:
        jobs.fail(job_id, error)
        return None
    return result


def process_owner() -> str:
    """A name for this process that no other process, here or on another host, shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _train(
    job: JobRecord, settings: Settings, jobs: JobRecords, owner: str
) -> dict[str, Any] | None:
    """Train and commit; None when the job stopped being `owner`'s meanwhile (nothing stored)."""
    # Imported here rather than at the top: a fresh pool process must set THREAD_LIMIT_ENV
    # before numpy and scikit-learn load, and the server process never needs them early.
    from threadpoolctl import threadpool_limits

    from ML.datasets import read_labelled_csv
    from ML.job_commit import commit_job_version
    from ML.training import TrainingOptions, train_model

    options = job.options_as(TrainingJobOptions)
    store = settings.open_model_store(create=False)
    upload_path = job_upload(job, store)
    with threadpool_limits(limits=1):
        dataset = read_labelled_csv(upload_path, options.target_variable, settings.dataset_limits())
        trained = train_model(dataset, TrainingOptions.for_job(options))
    delete_upload(job.upload_path)  # before the commit turns the record terminal
    result = commit_job_version(
        store,
        jobs,
        job.id,
        owner,
        trained.pipeline,
        trained.metadata,
        model_name=job.model_name,
        promote=options.promote,
        result={"metrics": trained.metadata["metrics"], "promoted": options.promote},
    )
    if result is not None:
        logger.info(
            "job %s succeeded: model %r version %s", job.id, job.model_name, result["version"]
        )
    return result


def job_upload(job: JobRecord, store: ModelStore) -> Path:
    """The job's uploaded CSV; StoreUnavailable when it went away with the store folder
    (moved away at run time), InvalidDataset when only the file is gone."""
    upload_path = Path(job.upload_path) if job.upload_path else None
    if upload_path is None or not upload_path.is_file():
        store.require_available()
        raise InvalidDataset(
            "the uploaded CSV of this job is gone from the server; upload it again"
        )
    return upload_path


def _skip_unclaimed(jobs: JobRecords, job_id: str) -> None:
    job = jobs.get(job_id)
    logger.info("job %s not started: it is %s", job_id, job.status)
    # A running job belongs to whoever claimed it (a duplicate submission); keep its upload.
    if job.status.is_terminal:
        delete_upload(job.upload_path)


def delete_upload(upload_path: str | None) -> None:
    if upload_path is None:
        return
    try:
        Path(upload_path).unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not delete the upload %s: %s", upload_path, exc)


def _init_pool_process(
    log_queue: multiprocessing.queues.Queue[Any], log_level: int, server_pid: int
) -> None:
    """Prepare a fresh (spawned) pool process before it runs any job."""
    _die_with_server(server_pid)
    for name in THREAD_LIMIT_ENV:
        os.environ[name] = "1"
    # Ctrl-C reaches the whole process group; the server decides when jobs stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Records go to the server process, whose logging is configured (ML_server.log).
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(log_level)
    logging.captureWarnings(True)  # scikit-learn's warnings reach the server log too


def _die_with_server(server_pid: int) -> None:
    """Never outlive the server process: an orphan would train on, holding hundreds of MB,
    and could commit a version for a job its server no longer answers for."""
    if sys.platform == "linux":
        # The kernel sends SIGKILL when our parent dies, even by SIGKILL, which no
        # handler, atexit or pipe-watching thread in the parent could ever report.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != server_pid:
        os._exit(1)  # the server died before the line above took effect: nobody to work for


class EmbeddedJobRunner:
    """Runs training jobs in a pool of spawned processes inside one server process.

    The pool's processes start on demand at the first submit, so start() is cheap. A
    heartbeat thread marks this server process alive in the job store and takes over the
    jobs of server processes that stopped (failing what they ran, re-running what they
    had queued). A pool broken by a killed process fails the job that ran in it and is
    replaced, so no job stays running forever.
    """

    def __init__(self, settings: Settings, jobs: JobStore) -> None:
        self.settings = settings
        self.jobs = jobs
        self.owner = process_owner()
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._attempts: dict[str, int] = {}
        self._is_closing = False
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._log_relay: _LogRelay | None = None
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastml-job-spawner")

    def start(self) -> None:
        with self._lock:
            self._pool = self._new_pool()
        try:
            self.jobs.heartbeat(self.owner)
            self._recover_orphans()
            self._recover_staged_versions(create_store=True)
        except (StorageFull, StoreUnavailable) as exc:
            # Predictions need neither: serve them, and let the heartbeat retry.
            logger.warning("job runner starts without its job store: %s", exc.message)
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name="fastml-job-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
        logger.info("job runner %s started with %d process(es)", self.owner, self._max_workers)

    def submit(self, job_id: str) -> None:
        """Hand a queued job to the pool without waiting for it."""
        with self._lock:
            if self._is_closing:
                logger.info("job %s stays queued: this server is shutting down", job_id)
                return
            self._attempts[job_id] = self._attempts.get(job_id, 0) + 1
            pool = self._pool or self._new_pool()
            try:
                future = self._submit_to(pool, job_id)
            except BrokenProcessPool:
                # Broke a moment ago; its futures' callbacks have not replaced it yet.
                pool = self._new_pool()
                future = self._submit_to(pool, job_id)
            self._pool = pool
        # Outside the lock: an already finished future runs the callback right here.
        future.add_done_callback(partial(self._on_done, job_id, pool))

    async def wait(self, job_id: str, timeout: float) -> JobRecord:
        """Poll the job store until the job has finished; TimeoutError past `timeout` seconds."""
        return await wait_until_finished(self.jobs, job_id, timeout)

    def shutdown(self) -> None:
        """Let running jobs finish, leave the others queued for the next server, stop."""
        with self._lock:
            self._is_closing = True
            pool, self._pool = self._pool, None
        if pool is not None:
            # The heartbeat goes on meanwhile, so no peer fails the jobs still running.
            pool.shutdown(wait=True, cancel_futures=True)
        self._spawner.shutdown(wait=True)
        self._stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=HEARTBEAT_SECONDS * 5)
        try:
            # Without an owner, the jobs left queued are taken by a live peer at once.
            self.jobs.retire(self.owner)
        except Exception:
            logger.exception("could not retire job runner %s", self.owner)
        # Dropped, not just stopped: its queue's semaphores are released when the last
        # reference goes, and a worker killed by its own re-raised SIGTERM never runs the
        # atexit hooks that would (the resource tracker then reports them as leaked).
        relay, self._log_relay = self._log_relay, None
        if relay is not None:
            relay.stop(wait=True)
        logger.info("job runner %s stopped", self.owner)

    def _submit_to(self, pool: ProcessPoolExecutor, job_id: str) -> Future[Any]:
        """Submit from the one long-lived spawner thread, which is where the pool starts
        its processes: PR_SET_PDEATHSIG fires when the *thread* that started a process
        ends, and callers include short-lived threads (a broken pool's manager)."""
        spawning = self._spawner.submit(pool.submit, run_job, job_id, self.settings, self.owner)
        return spawning.result()

    @property
    def _max_workers(self) -> int:
        return self.settings.training_processes

    def _new_pool(self) -> ProcessPoolExecutor:
        """A pool with its own log queue: a killed process may leave the old queue's lock held."""
        relay, old_relay = _LogRelay(self._context), self._log_relay
        self._log_relay = relay
        if old_relay is not None:
            old_relay.stop(wait=False)
        child_level = min(logging.getLogger().getEffectiveLevel(), logger.getEffectiveLevel())
        return ProcessPoolExecutor(
            max_workers=self._max_workers,
            mp_context=self._context,
            initializer=_init_pool_process,
            initargs=(relay.queue, child_level, os.getpid()),
            # A fresh process per job: one that trained on a big CSV gives its memory back
            # at once (README: "Training processes"). 1 also avoids CPython gh-115634, a
            # hang that needs max_tasks_per_child > 1.
            max_tasks_per_child=1,
        )

    def _on_done(self, job_id: str, pool: ProcessPoolExecutor, future: Future[Any]) -> None:
        # Runs in the pool's management thread; it must never raise.
        try:
            if future.cancelled():
                return  # shutdown: the job stays queued for the next server
            error = future.exception()
            if error is None:
                self._forget_attempts(job_id)
            elif isinstance(error, BrokenProcessPool):
                self._replace_pool(pool)
                self._after_broken_pool(job_id)
            else:
                logger.error("job %s: its process raised", job_id, exc_info=error)
                self._fail_own_job(job_id, f"internal error: {type(error).__name__}: {error}")
        except Exception:
            logger.exception("job %s: could not record how its process ended", job_id)

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken and not self._is_closing:
                logger.warning("a training process died; starting a new process pool")
                self._pool = self._new_pool()

    def _after_broken_pool(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job.owner != self.owner or job.status.is_terminal:
            return
        if job.status is JobStatus.RUNNING:
            self._fail_own_job(job_id, BROKEN_POOL_ERROR)
            return
        # Still queued: it never started, so running it in the new pool is safe.
        with self._lock:
            attempts = self._attempts.get(job_id, 0)
        if attempts < MAX_SUBMIT_ATTEMPTS:
            self.submit(job_id)
        else:
            self._fail_own_job(
                job_id,
                f"could not start a training process in {attempts} attempts; "
                "check the server log and train again",
            )

    def _fail_own_job(self, job_id: str, error: str) -> None:
        self._forget_attempts(job_id)
        job = self.jobs.get(job_id)
        if job.owner == self.owner and self.jobs.fail(job_id, error):
            delete_upload(job.upload_path)
            logger.warning("job %s failed: %s", job_id, error)

    def _recover_staged_versions(self, *, create_store: bool = False) -> None:
        """Publish or discard versions left staged by job processes that died committing.

        create_store: at start, a missing store is a first start and is created; later,
        a missing store went away and must not be replaced by an empty one.
        """
        from ML.job_commit import recover_staged_versions

        try:
            store = self.settings.open_model_store(create=create_store)
            recover_staged_versions(store, self.jobs)
        except Exception:
            logger.exception("could not recover staged model versions; next start tries again")

    def _forget_attempts(self, job_id: str) -> None:
        with self._lock:
            self._attempts.pop(job_id, None)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.jobs.heartbeat(self.owner)
                if not self._is_closing:
                    self._recover_orphans()
            except (StorageFull, StoreUnavailable) as exc:
                logger.warning("job runner heartbeat: %s", exc.message)
            except Exception:
                logger.exception("job runner heartbeat failed; trying again in a moment")

    def _recover_orphans(self) -> None:
        failed, requeued = self.jobs.recover_orphans(STALE_AFTER_SECONDS, self.owner)
        for job_id in failed:
            delete_upload(self.jobs.get(job_id).upload_path)
        if failed:
            self._recover_staged_versions()
        for job_id in requeued:
            try:
                self.submit(job_id)
            except Exception as exc:
                # Now owned by this live process, nobody else would ever run it: fail it.
                logger.exception("job %s: could not hand it to a training process", job_id)
                self._fail_own_job(job_id, f"internal error: {type(exc).__name__}: {exc}")


class _LogRelay:
    """Hands log records from pool processes to this process's configured handlers."""

    def __init__(self, context: multiprocessing.context.SpawnContext) -> None:
        self.queue: multiprocessing.queues.Queue[Any] = context.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastml-job-logs", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool) -> None:
        """Stop once the queue is drained; wait=False from threads that must not block."""
        self._stop.set()
        if wait:
            # A timeout: a killed process may have left half a record in the queue.
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        try:
            while True:
                try:
                    record = self.queue.get(timeout=0.2)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                except Exception:
                    # Closed, or a record cut short by a killed process: the queue is done.
                    logger.warning("lost the log queue of the job processes", exc_info=True)
                    return
                try:
                    logging.getLogger(record.name).handle(record)
                except Exception:
                    logger.exception("could not relay a log record from a job process")
        finally:
            self.queue.close()
