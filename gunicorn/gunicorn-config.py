"""Gunicorn settings: Uvicorn workers serving wsgi:app; every knob has a FASTML_ variable."""

import os
import shutil
import tempfile
from pathlib import Path

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
control_socket = os.environ.get("FASTML_CONTROL_SOCKET", str(_runtime_dir / "gunicorn.ctl"))

bind = os.environ.get("FASTML_BIND", "127.0.0.1:8000")
# The process title names the address (`gunicorn: master [fastml 127.0.0.1:8000]`), so
# `pgrep -f 'fastml.*8000'` finds the server; FASTML_PID_FILE (or --pid) writes its pid.
proc_name = f"fastml {bind}"
pidfile = os.environ.get("FASTML_PID_FILE") or None
workers = int(os.environ.get("FASTML_WORKERS", "2"))
# Uvicorn workers that keep the limits below (rest_api/worker.py, rest_api/http_protocol.py).
worker_class = "rest_api.worker.FastMLWorker"
# Training runs in a separate process pool, so a worker is never busy for long.
timeout = int(os.environ.get("FASTML_WORKER_TIMEOUT", "60"))
graceful_timeout = 30
# Seconds an idle connection stays open, before its first request and between requests.
keepalive = int(os.environ.get("FASTML_KEEPALIVE", "5"))
backlog = 2048
# fastml writes its own request lines to ML_server.log; gunicorn reports to stderr.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("FASTML_LOG_LEVEL", "info")
# Request line, header count and header line size: 414/431 past them. The FastMLWorker
# applies them (Uvicorn alone ignores them), with the FASTML_LIMIT_REQUEST_HEAD_BYTES,
# FASTML_HEADER_TIMEOUT, FASTML_BODY_TIMEOUT and FASTML_BODY_MIN_RATE it reads itself.
limit_request_line = int(os.environ.get("FASTML_LIMIT_REQUEST_LINE", "8190"))
limit_request_fields = int(os.environ.get("FASTML_LIMIT_REQUEST_FIELDS", "100"))
limit_request_field_size = int(os.environ.get("FASTML_LIMIT_REQUEST_FIELD_SIZE", "8190"))
# A defence against slow leaks: a worker that has answered this many requests (plus a random
# jitter, so workers do not restart together) finishes what it has and is replaced, without
# dropping a request. 0 turns it off.
max_requests = int(os.environ.get("FASTML_MAX_REQUESTS", "1000000"))
max_requests_jitter = int(os.environ.get("FASTML_MAX_REQUESTS_JITTER", str(max_requests // 10)))


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
