#!/usr/bin/env sh
# Start fastml: gunicorn with Uvicorn workers on FASTML_BIND (default 127.0.0.1:8000).
set -eu
cd "$(dirname "$0")/.."
exec gunicorn -c gunicorn/gunicorn-config.py wsgi:app "$@"
