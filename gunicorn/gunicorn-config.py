"""Gunicorn settings: Uvicorn workers serving wsgi:app; every knob has a FASTML_ variable."""

import os
import shutil
import tempfile
from pathlib import Path

# Numeric libraries get one thread per worker; set before any worker imports numpy.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# Prometheus multiprocess mode: each worker writes samples here, /metrics sums them.
# A fresh directory per server start, so counters of a previous run never leak in.
_metrics_dir = Path(tempfile.mkdtemp(prefix="fastml-metrics-"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

bind = os.environ.get("FASTML_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("FASTML_WORKERS", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
# Training runs in a separate process pool, so a worker is never busy for long.
timeout = int(os.environ.get("FASTML_WORKER_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = int(os.environ.get("FASTML_KEEPALIVE", "5"))
backlog = 2048
# fastml writes its own request lines to ML_server.log; gunicorn reports to stderr.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("FASTML_LOG_LEVEL", "info")
# Gunicorn >= 26 request-line and header limits, kept at their safe defaults.
limit_request_line = 8190
limit_request_fields = 100


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    shutil.rmtree(_metrics_dir, ignore_errors=True)
