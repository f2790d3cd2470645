"""Password checks: one argon2id verification per failure whoever the user, off the event
loop; the users file and the CLI speak argon2id only."""

from __future__ import annotations

import asyncio
import io
import logging
import stat
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from pydantic import SecretStr

from ML.config import Settings
from rest_api.auth import _DUMMY_HASH, Authenticator, AuthFailed, LoginThrottle
from rest_api.login_failures import LoginLimits, SQLiteFailureCounters
from rest_api.passwords import hash_password, new_hasher, verify_password
from rest_api.users import Role, UserRecord, UsersFileError, load_users, main, read_users_file
from tests.rest_api.test_login_throttle import CountingHasher, counting_hasher, header

GATE_DEADLINE_SECONDS = 30.0


def authenticator_for(
    tmp_path: Path, users: dict[str, UserRecord], hasher: PasswordHasher
) -> Authenticator:
    counters = SQLiteFailureCounters(tmp_path / "counters.sqlite3", LoginLimits(max_failures=50))
    return Authenticator(users, LoginThrottle(counters), hasher)


def verifications_for(
    authenticator: Authenticator, hasher: CountingHasher, name: str, password: str, client: str
) -> tuple[int, int]:
    """(status, argon2 verifications) of one login."""
    before = hasher.verifications
    try:
        asyncio.run(authenticator.authenticate(header(name, password), client))
        status = 200
    except AuthFailed as failure:
        status = failure.status
    return status, hasher.verifications - before


def test_every_failure_costs_one_hash_verification(tmp_path: Path, users_file: Path) -> None:
    hasher = counting_hasher()
    settings = Settings(
        model_dir=tmp_path / "models",
        service_user="admin",
        service_pass=SecretStr("env-password-1"),
        users_file=users_file,
    )
    authenticator = authenticator_for(tmp_path, load_users(settings, hasher), hasher)

    def login(name: str, password: str, client: str = "10.0.0.1") -> tuple[int, int]:
        return verifications_for(authenticator, hasher, name, password, client)

    # Unknown user, users-file user and SERVICE_PASS user: a wrong password is one hash each.
    assert login("nobody", "guess") == (401, 1)
    assert login("tina", "guess") == (401, 1)
    assert login("admin", "guess") == (401, 1)
    # A right password is verified once per worker; a wrong one still costs a full hash
    # after that, so a recently seen user cannot be told apart by a fast failure.
    assert login("admin", "env-password-1") == (200, 1)
    assert login("admin", "env-password-1", client="10.0.0.2") == (200, 0)
    assert login("admin", "guess", client="10.0.0.3") == (401, 1)
    assert login("nobody", "env-password-1", client="10.0.0.3") == (401, 1)


def test_service_pass_is_kept_as_an_argon2id_hash(tmp_path: Path) -> None:
    settings = Settings(
        model_dir=tmp_path / "models", service_user="admin", service_pass=SecretStr("pw-123456")
    )
    record = load_users(settings, new_hasher())["admin"]
    assert record.password_hash.startswith("$argon2id$")
    assert not new_hasher().check_needs_rehash(record.password_hash)
    assert "pw-123456" not in repr(record)


def test_dummy_hash_costs_what_a_user_hash_costs() -> None:
    assert extract_parameters(_DUMMY_HASH) == extract_parameters(hash_password("x"))


class GatedHasher(PasswordHasher):
    """A real argon2id hasher whose verifications wait at a gate the test opens."""

    def __init__(self) -> None:
        parameters = extract_parameters(new_hasher().hash("x"))
        super().__init__(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost,
            parallelism=parameters.parallelism,
        )
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.waiting.set()
        self.gate.wait(GATE_DEADLINE_SECONDS)
        return super().verify(hash, password)


def test_hash_verification_does_not_block_the_event_loop(tmp_path: Path) -> None:
    hasher = GatedHasher()
    users = {"tina": UserRecord("tina", Role.TRAINER, hash_password("right-password-1"))}
    authenticator = authenticator_for(tmp_path, users, hasher)
    right = header("tina", "right-password-1")

    async def scenario() -> None:
        hasher.gate.set()
        await authenticator.authenticate(right, "10.0.0.1")  # verified once, now cached
        hasher.gate.clear()
        hasher.waiting.clear()
        guess = asyncio.ensure_future(authenticator.authenticate(header("tina", "x"), "10.6.6.6"))
        for _ in range(3000):
            if hasher.waiting.is_set() or guess.done():
                break
            await asyncio.sleep(0.01)
        assert hasher.waiting.is_set(), "the wrong password never reached the hasher"
        # While that hash is being verified, the loop still serves another login.
        user = await authenticator.authenticate(right, "10.0.0.1")
        assert user.name == "tina"
        assert not guess.done() and not hasher.gate.is_set()
        hasher.gate.set()
        with pytest.raises(AuthFailed):
            await guess

    asyncio.run(scenario())


def test_users_file_refuses_scrypt_hashes_with_the_fix(tmp_path: Path) -> None:
    users_file = tmp_path / "users.txt"
    users_file.write_text(
        "alice:trainer:scrypt$131072$8$1$AAAAAAAAAAAAAAAAAAAAAA$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    )
    with pytest.raises(UsersFileError, match=r"users.txt:1: .*'alice'.*scrypt.*users add"):
        read_users_file(users_file)
    users_file.write_text(f"alice:trainer:{PasswordHasher(type=Type.I).hash('x')}\n")
    with pytest.raises(UsersFileError, match=r"not an argon2id hash"):
        read_users_file(users_file)
    users_file.write_text("alice:trainer:$argon2id$garbage\n")
    with pytest.raises(UsersFileError, match=r"malformed argon2id hash"):
        read_users_file(users_file)


def test_users_file_warns_about_other_cost_parameters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users_file = tmp_path / "users.txt"
    users_file.write_text(f"alice:trainer:{PasswordHasher(time_cost=3).hash('pw')}\n")
    with caplog.at_level(logging.WARNING, logger="rest_api.users"):
        users = read_users_file(users_file)
    assert verify_password(new_hasher(), users["alice"].password_hash, "pw")
    assert "other cost parameters" in caplog.text and "alice" in caplog.text


def test_cli_writes_an_argon2id_line_to_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users_file = tmp_path / "users.txt"
    users_file.write_text("bob:predictor:old\n")
    users_file.chmod(0o644)
    monkeypatch.setattr("sys.stdin", io.StringIO("a-new-password\n"))

    assert (
        main(["add", "alice", "--role", "trainer", "--file", str(users_file), "--password-stdin"])
        == 0
    )

    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    lines = users_file.read_text().splitlines()
    assert lines[0] == "bob:predictor:old"
    name, role, encoded = lines[1].split(":", 2)
    assert (name, role) == ("alice", "trainer")
    assert not new_hasher().check_needs_rehash(encoded)
    assert verify_password(new_hasher(), encoded, "a-new-password")
    assert [path.name for path in tmp_path.iterdir()] == ["users.txt"]
