"""The first start: the files a server needs, created once, before any worker runs."""

from __future__ import annotations

import logging
import sqlite3

from ML.config import Settings
from ML.errors import FastMLError
from ML.jobs import JobStore
from ML.private_files import make_private_dir
from rest_api.login_failures import LoginLimits, SQLiteFailureCounters
from rest_api.passwords import new_hasher
from rest_api.users import load_users

logger = logging.getLogger(__name__)


def create_storage(settings: Settings) -> None:
    """Create what is missing of the model store and its key, the state folder with its
    uploads folder, job database and login counters, and the generated admin.

    The gunicorn master calls this once, then tells its workers never to create any of
    these (FASTML_CREATE_STORE=false): a worker started while the store folder is moved
    away must not put an empty one in its place. A failure (a full disk) is logged, not
    raised: the workers start anyway and say what is wrong.
    """
    try:
        make_private_dir(settings.uploads_dir)  # and the state folder, 0700
        settings.open_model_store(create=True)
        JobStore(settings.jobs_db_path).list_recent(1)  # creates the database and its tables
        # No connection may stay open across the fork of the workers (SQLite's rule).
        SQLiteFailureCounters(settings.login_failures_db_path, LoginLimits()).close()
        load_users(settings, new_hasher())  # writes the generated admin's password file
    except (FastMLError, OSError, sqlite3.Error) as exc:
        logger.warning("could not create the server's storage: %s", exc)
