"""Who the load client logs in as, and what to tell a user whose answers were 401, 403 or 429.

Without options the client uses the environment (FASTML_USER/FASTML_PASSWORD, else the
fast-ml SERVICE_USER/SERVICE_PASS), else the admin a server generates on its first start
when no user is configured: the same file the README's tour reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from testing.load_report import LoadReport

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Written by rest_api/users.py (GENERATED_ADMIN_FILE); a test keeps the two names equal.
GENERATED_ADMIN_FILE = "admin_credentials.txt"
AUTH_STATUSES = (401, 403, 429)
LOGIN_ADVICE = (
    "pass --user NAME --password PASSWORD (or set FASTML_USER and FASTML_PASSWORD); "
    "without them the client reads the generated admin's from {path}"
)


class CredentialsError(Exception):
    """No usable credentials; the message says where they were looked for."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)
    source: str  # where they came from, shown in the report when they were refused


def generated_admin_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where a server started with this environment keeps its generated admin's password."""
    state_dir = environ.get("FASTML_STATE_DIR")
    if not state_dir:
        model_dir = environ.get("FASTML_MODEL_DIR") or "ML/saved_models"
        state_dir = str(Path(model_dir) / "_state")
    # Relative paths are the server's, which gunicorn/start-server.sh runs from the project.
    return PROJECT_DIR / state_dir / GENERATED_ADMIN_FILE


def resolve_credentials(
    user: str | None, password: str | None, environ: Mapping[str, str] = os.environ
) -> Credentials:
    """Options first, then FASTML_USER/FASTML_PASSWORD, SERVICE_USER/SERVICE_PASS, the file."""
    if password is not None:
        name = user or environ.get("FASTML_USER") or environ.get("SERVICE_USER") or "admin"
        return Credentials(name, password, "--password")
    for user_variable, password_variable in (
        ("FASTML_USER", "FASTML_PASSWORD"),
        ("SERVICE_USER", "SERVICE_PASS"),
    ):
        if environ.get(password_variable):
            name = user or environ.get(user_variable) or "admin"
            return Credentials(name, environ[password_variable], f"${password_variable}")
    path = generated_admin_path(environ)
    try:
        name, _, stored = path.read_text(encoding="utf-8").strip().partition(":")
    except FileNotFoundError:
        raise CredentialsError(
            f"no credentials: pass --user and --password (or set FASTML_USER and "
            f"FASTML_PASSWORD); a server started without SERVICE_USER/SERVICE_PASS writes its "
            f"admin's to {path}, which does not exist (set FASTML_MODEL_DIR or "
            "FASTML_STATE_DIR as the server has them)"
        ) from None
    except OSError as exc:
        raise CredentialsError(
            f"cannot read the generated admin's password in {path} ({exc.strerror}); run as "
            "the server's user, or pass --user and --password"
        ) from exc
    if user is not None and user != name:
        raise CredentialsError(
            f"no password for user {user!r}: {path} holds {name!r}'s; pass --password"
        )
    return Credentials(name, stored, str(path))


def auth_note(report: LoadReport, credentials: Credentials) -> str | None:
    """A plain sentence when most answers were 401/403/429: the cause and how to fix it."""
    refused = {status: report.statuses.get(status, 0) for status in AUTH_STATUSES}
    if report.answers == 0 or sum(refused.values()) * 2 <= report.answers:
        return None
    how = LOGIN_ADVICE.format(path=generated_admin_path())
    who = f"user {credentials.user!r} (from {credentials.source})"
    if refused[403] >= max(refused[401], refused[429]):
        return (
            f"most answers were 403: {who} logged in but its role may not make this call "
            f"(predictions need the predictor, trainer or admin role); {how}"
        )
    return (
        f"most answers were 401/429: the server refused the password of {who}, and 429 "
        f"means it now throttles the failed logins (wait before retrying); {how}"
    )
