"""Gunicorn settings: Uvicorn workers serving wsgi:app; knobs come from ML/config.py."""

import os
import shutil
import tempfile
from pathlib import Path

from ML.config import Settings

_settings = Settings()

# Numeric libraries get one thread per worker; set before any worker imports numpy.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# A fresh runtime directory per server start, removed at exit. It holds the Prometheus
# multiprocess files (each worker writes samples there, /metrics sums them; a new directory
# means counters of a previous run never leak in) and gunicorn's control socket, so two
# servers on one host never fight over gunicorn's default ~/.gunicorn/gunicorn.ctl.
_runtime_dir = Path(tempfile.mkdtemp(prefix="fastml-"))
_metrics_dir = _runtime_dir / "metrics"
_metrics_dir.mkdir()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
control_socket = str(_runtime_dir / "gunicorn.ctl")

bind = _settings.bind
# The process title names the address (`gunicorn: master [fastml 127.0.0.1:8000]`), so
# `pgrep -f 'fastml.*8000'` finds the server; FASTML_PID_FILE (or --pid) writes its pid.
proc_name = f"fastml {bind}"
pidfile = str(_settings.pid_file) if _settings.pid_file else None
workers = _settings.workers
# Uvicorn workers that keep the limits below (rest_api/worker.py, rest_api/http_protocol.py).
worker_class = "rest_api.worker.FastMLWorker"
# Training runs in a separate process pool, so a worker is never busy for long.
timeout = _settings.worker_timeout
graceful_timeout = 30
# Seconds an idle connection stays open, before its first request and between requests.
keepalive = _settings.keepalive
backlog = 2048
# fastml writes its own request lines to ML_server.log; gunicorn reports to stderr.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
# Request line, header count and header line size: 414/431 past them. The FastMLWorker
# applies them (Uvicorn alone ignores them), with the head size and the header and body
# deadlines it reads from the same settings.
limit_request_line = _settings.limit_request_line
limit_request_fields = _settings.limit_request_fields
limit_request_field_size = _settings.limit_request_field_size
# A defence against slow leaks: a worker that has answered this many requests (plus a random
# jitter, so workers do not restart together) finishes what it has and is replaced, without
# dropping a request. 0 turns it off.
max_requests = _settings.max_requests
max_requests_jitter = (
    _settings.max_requests // 10
    if _settings.max_requests_jitter is None
    else _settings.max_requests_jitter
)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    shutil.rmtree(_runtime_dir, ignore_errors=True)


def on_starting(server):  # type: ignore[no-untyped-def]
    # Workers are forked from this process: importing the app's modules (FastAPI,
    # scikit-learn, pandas) here once means a new or recycled worker does not import them
    # again, which is most of its boot time. The app itself is still built in each worker.
    import rest_api.app  # noqa: F401
    from rest_api.storage_setup import create_storage

    # The store, state folder and job database are made here, once; workers (forked from
    # this process, so they inherit the variable) never make them: a worker that starts
    # while the store folder is moved away boots unready and answers 503 until it is back,
    # instead of putting an empty store in its place.
    if _settings.create_store:
        create_storage(_settings)
    os.environ["FASTML_CREATE_STORE"] = "false"
