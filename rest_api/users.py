"""Who may log in: users from the environment, a users file, or a generated first admin.

Users file format, one user per line (`#` starts a comment), argon2id hashes only:

    alice:trainer:$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>

Add a line with `python -m rest_api.users add NAME --role trainer --file users.txt`.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import re
import secrets
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher

from ML.config import Settings
from ML.private_files import open_new_private_file, write_private_file
from rest_api.passwords import HOW_TO_ADD_A_USER, has_server_parameters, hash_password, hash_problem

logger = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
GENERATED_ADMIN_FILE = "admin_credentials.txt"
GENERATED_ADMIN_NAME = "admin"


class Role(StrEnum):
    """Roles nest: an admin may do what a trainer may, a trainer what a predictor may."""

    PREDICTOR = "predictor"
    TRAINER = "trainer"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        return _RANKS[self] >= _RANKS[needed]


# A dict, not list(Role).index(): allows() runs on every request.
_RANKS = {role: rank for rank, role in enumerate(Role)}


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: Role
    # argon2id. Passwords given in plain (SERVICE_PASS, the generated admin's) are hashed at
    # start-up, so every user, and every unknown name, costs one hash verification to check.
    password_hash: str


class UsersFileError(ValueError):
    """The users file cannot be used; the message names the line."""


def load_users(settings: Settings, hasher: PasswordHasher) -> dict[str, UserRecord]:
    """Every configured user; when none is, the generated admin (created on first start)."""
    users: dict[str, UserRecord] = {}
    if settings.users_file is not None:
        users.update(read_users_file(settings.users_file))
    if settings.service_user:
        if settings.service_pass is None or not settings.service_pass.get_secret_value():
            raise UsersFileError("SERVICE_USER is set but SERVICE_PASS is empty; set both")
        users[settings.service_user] = UserRecord(
            settings.service_user,
            Role.ADMIN,
            hash_password(settings.service_pass.get_secret_value(), hasher),
        )
    if not users:
        admin = _generated_admin(settings.resolved_state_dir, hasher, settings.create_store)
        if admin is not None:
            users[GENERATED_ADMIN_NAME] = admin
    return users


def read_users_file(path: Path) -> dict[str, UserRecord]:
    users: dict[str, UserRecord] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role_text, _, password_hash = rest.partition(":")
        where = f"{path}:{number}"
        if not USERNAME_PATTERN.match(name):
            raise UsersFileError(
                f"{where}: user name {name!r} must match {USERNAME_PATTERN.pattern}"
            )
        if role_text not in Role.__members__.values():
            raise UsersFileError(
                f"{where}: role {role_text!r} must be one of admin, trainer, predictor"
            )
        problem = hash_problem(password_hash)
        if problem is not None:
            raise UsersFileError(f"{where}: the password hash of {name!r} {problem}")
        if not has_server_parameters(password_hash):
            logger.warning(
                "%s: the argon2id hash of %r has other cost parameters than the server's "
                "(m=19456,t=2,p=1), so checking it takes a different time, which tells that "
                "this user exists; set the password again with `%s`",
                where,
                name,
                HOW_TO_ADD_A_USER,
            )
        users[name] = UserRecord(name, Role(role_text), password_hash)
    return users


# The generated admin as this process last read it. A gunicorn worker inherits the one its
# master read at start, so a worker started while the state folder is away still knows it.
_generated_admins_read: dict[Path, UserRecord] = {}


def _generated_admin(state_dir: Path, hasher: PasswordHasher, create: bool) -> UserRecord | None:
    """The first start writes a random admin password to a 0600 file and says where, never what.

    `create=False` (a gunicorn worker) only reads the file, and None when it is missing and
    its master never read it either.
    """
    path = state_dir / GENERATED_ADMIN_FILE
    password = secrets.token_urlsafe(18)
    if create and write_private_file(path, f"{GENERATED_ADMIN_NAME}:{password}\n"):
        print(
            f"fastml: no user configured; created user '{GENERATED_ADMIN_NAME}' with a random "
            f"password stored in {path} (readable only by its owner). Set SERVICE_USER and "
            "SERVICE_PASS or FASTML_USERS_FILE to choose your own.",
            file=sys.stderr,
            flush=True,
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if create:
            raise
        known = _generated_admins_read.get(path)
        if known is None:
            logger.warning("no user configured and %s is missing: nobody can log in", path)
        return known
    name, _, stored = text.strip().partition(":")
    record = _generated_admins_read[path] = UserRecord(
        name, Role.ADMIN, hash_password(stored, hasher)
    )
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Manage the fastml users file.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add or replace a user in a users file")
    add.add_argument("name")
    add.add_argument("--role", choices=[role.value for role in Role], required=True)
    add.add_argument("--file", type=Path, required=True)
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    args = parser.parse_args(argv)
    if not USERNAME_PATTERN.match(args.name):
        parser.error(f"user name must match {USERNAME_PATTERN.pattern}")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass()
    if len(password) < 8:
        parser.error("use a password of at least 8 characters")
    users_file: Path = args.file
    kept = []
    if users_file.exists():
        kept = [
            line
            for line in users_file.read_text(encoding="utf-8").splitlines()
            if line.partition(":")[0] != args.name
        ]
    kept.append(f"{args.name}:{args.role}:{hash_password(password)}")
    _replace_private_file(users_file, "\n".join(kept) + "\n")
    print(f"user {args.name!r} ({args.role}) written to {users_file}")
    return 0


def _replace_private_file(path: Path, text: str) -> None:
    """Write `path` as 0600 from its first byte: a new file, then a rename over the old one."""
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(open_new_private_file(temp_path), "w", encoding="utf-8") as temp_file:
            temp_file.write(text)
        os.replace(temp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()


if __name__ == "__main__":
    raise SystemExit(main())
