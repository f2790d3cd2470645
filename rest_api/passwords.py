"""Password hashes: argon2id with OWASP's parameters, the one scheme fastml writes and reads."""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP Password Storage Cheat Sheet: argon2id, 19 MiB, 2 iterations, 1 lane. About 25 ms on
# one idle core here; verified once per worker and user, then cached.
TIME_COST, MEMORY_COST_KIB, PARALLELISM = 2, 19 * 1024, 1
ARGON2ID_PREFIX = "$argon2id$"
HOW_TO_ADD_A_USER = "python -m rest_api.users add NAME --role ROLE --file FILE"


def new_hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=TIME_COST,
        memory_cost=MEMORY_COST_KIB,
        parallelism=PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    return (hasher or new_hasher()).hash(password)


def verify_password(hasher: PasswordHasher, encoded: str, password: str) -> bool:
    """True when `password` matches `encoded`; a malformed hash never matches."""
    try:
        return hasher.verify(encoded, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_problem(encoded: str) -> str | None:
    """Why a users-file hash cannot be used, or None when it can."""
    if encoded.startswith("scrypt$"):
        return (
            "is an scrypt hash, which fastml no longer accepts (it cost 0.4 s per check and "
            "told unknown users from known ones); set the password again with "
            f"`{HOW_TO_ADD_A_USER}`, which writes an argon2id hash"
        )
    if not encoded.startswith(ARGON2ID_PREFIX):
        return f"is not an argon2id hash ($argon2id$...); make one with `{HOW_TO_ADD_A_USER}`"
    try:
        new_hasher().check_needs_rehash(encoded)
    except InvalidHashError:
        return f"is a malformed argon2id hash; make a new one with `{HOW_TO_ADD_A_USER}`"
    return None


def has_server_parameters(encoded: str) -> bool:
    """Whether a valid argon2id hash costs what the server's own hashes cost to verify."""
    return not new_hasher().check_needs_rehash(encoded)
