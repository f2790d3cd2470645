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
workers = _settings.workers
worker_class = "uvicorn_worker.UvicornWorker"
# Training runs in a separate process pool, so a worker is never busy for long.
timeout = _settings.worker_timeout
graceful_timeout = 30
keepalive = _settings.keepalive
backlog = 2048
# fastml writes its own request lines to ML_server.log; gunicorn reports to stderr.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
# Gunicorn >= 26 request-line and header limits, kept at their safe defaults.
limit_request_line = 8190
limit_request_fields = 100


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    shutil.rmtree(_runtime_dir, ignore_errors=True)
