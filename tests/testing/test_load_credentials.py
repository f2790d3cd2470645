"""Who the load client logs in as, and the advice it gives when the answers were 401/403/429."""

from __future__ import annotations

from pathlib import Path

import pytest

from rest_api import users
from testing.load_credentials import (
    GENERATED_ADMIN_FILE,
    Credentials,
    CredentialsError,
    auth_note,
    generated_admin_path,
    resolve_credentials,
)
from testing.load_report import LoadReport
from testing.servers import PROJECT_DIR


def write_generated_admin(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / GENERATED_ADMIN_FILE
    path.write_text("admin:generated-pw\n")
    return path


def test_the_file_name_is_the_one_the_server_writes() -> None:
    assert users.GENERATED_ADMIN_FILE == GENERATED_ADMIN_FILE


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, PROJECT_DIR / "ML/saved_models/_state"),
        ({"FASTML_MODEL_DIR": "/srv/models"}, Path("/srv/models/_state")),
        ({"FASTML_MODEL_DIR": "custom/models"}, PROJECT_DIR / "custom/models/_state"),
        ({"FASTML_MODEL_DIR": "/srv/models", "FASTML_STATE_DIR": "/srv/state"}, Path("/srv/state")),
    ],
)
def test_generated_admin_path_follows_the_server_settings(
    environ: dict[str, str], expected: Path
) -> None:
    assert generated_admin_path(environ) == expected / GENERATED_ADMIN_FILE


def test_the_generated_admin_is_used_when_nothing_is_given(tmp_path: Path) -> None:
    path = write_generated_admin(tmp_path / "state")
    credentials = resolve_credentials(None, None, {"FASTML_STATE_DIR": str(tmp_path / "state")})
    assert credentials == Credentials("admin", "generated-pw", str(path))


@pytest.mark.parametrize(
    ("user", "password", "environ", "expected"),
    [
        ("ann", "pw", {"FASTML_PASSWORD": "env"}, ("ann", "pw", "--password")),
        (None, "pw", {"FASTML_USER": "bob"}, ("bob", "pw", "--password")),
        (None, "pw", {}, ("admin", "pw", "--password")),
        (
            None,
            None,
            {"FASTML_USER": "bob", "FASTML_PASSWORD": "e"},
            ("bob", "e", "$FASTML_PASSWORD"),
        ),
        ("ann", None, {"FASTML_PASSWORD": "e"}, ("ann", "e", "$FASTML_PASSWORD")),
        (None, None, {"SERVICE_USER": "svc", "SERVICE_PASS": "s"}, ("svc", "s", "$SERVICE_PASS")),
        (
            None,
            None,
            {"FASTML_PASSWORD": "e", "SERVICE_USER": "svc", "SERVICE_PASS": "s"},
            ("admin", "e", "$FASTML_PASSWORD"),
        ),
    ],
)
def test_options_then_environment_come_before_the_file(
    tmp_path: Path,
    user: str | None,
    password: str | None,
    environ: dict[str, str],
    expected: tuple[str, str, str],
) -> None:
    write_generated_admin(tmp_path)
    credentials = resolve_credentials(
        user, password, {**environ, "FASTML_STATE_DIR": str(tmp_path)}
    )
    assert (credentials.user, credentials.password, credentials.source) == expected


def test_no_credentials_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="--user and --password") as raised:
        resolve_credentials(None, None, {"FASTML_STATE_DIR": str(tmp_path)})
    assert str(tmp_path / GENERATED_ADMIN_FILE) in str(raised.value)


def test_another_user_than_the_generated_admin_needs_a_password(tmp_path: Path) -> None:
    write_generated_admin(tmp_path)
    with pytest.raises(CredentialsError, match="no password for user 'ann'"):
        resolve_credentials("ann", None, {"FASTML_STATE_DIR": str(tmp_path)})


def report_with(statuses: dict[int, int]) -> LoadReport:
    return LoadReport("http://127.0.0.1:8000/models/iris/predict", "json", 8, 100, 100, statuses)


WHO = Credentials("admin", "nope", "$FASTML_PASSWORD")


@pytest.mark.parametrize(
    "statuses",
    [{401: 20, 429: 180}, {401: 100}, {200: 40, 401: 10, 429: 50}],
)
def test_mostly_401_or_429_means_wrong_credentials(statuses: dict[int, int]) -> None:
    note = auth_note(report_with(statuses), WHO)
    assert note is not None
    assert "refused the password of user 'admin' (from $FASTML_PASSWORD)" in note
    assert "--user NAME --password PASSWORD" in note and GENERATED_ADMIN_FILE in note


def test_mostly_403_means_the_role_is_wrong() -> None:
    note = auth_note(report_with({403: 90, 200: 10}), WHO)
    assert note is not None and "role may not make this call" in note


@pytest.mark.parametrize("statuses", [{200: 100}, {200: 50, 401: 50}, {500: 100}, {}])
def test_no_note_unless_most_answers_were_refused(statuses: dict[int, int]) -> None:
    assert auth_note(report_with(statuses), WHO) is None
