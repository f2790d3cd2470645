"""Password hashes for the users file: scrypt (stdlib) and argon2 (argon2-cffi)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

SCRYPT_PREFIX = "scrypt"
# OWASP's scrypt floor: N=2^17, r=8, p=1 costs ~0.1 s and 128 MiB, once per worker per user.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
_ARGON2 = PasswordHasher()


def hash_password(password: str, scheme: str = "scrypt") -> str:
    """Encode a password for the users file; `scheme` is "scrypt" or "argon2"."""
    if scheme == "argon2":
        return _ARGON2.hash(password)
    if scheme != "scrypt":
        raise ValueError(f"unknown hash scheme {scheme!r}; use scrypt or argon2")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        [SCRYPT_PREFIX, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(encoded: str, password: str) -> bool:
    """True when `password` matches `encoded`; a malformed hash never matches."""
    if encoded.startswith("$argon2"):
        try:
            return _ARGON2.verify(encoded, password)
        except (VerificationError, InvalidHashError):
            return False
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCRYPT_PREFIX:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
        actual = _scrypt(password, salt, n, r, p, len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def is_valid_hash(encoded: str) -> bool:
    return encoded.startswith("$argon2") or (
        encoded.startswith(SCRYPT_PREFIX + "$") and len(encoded.split("$")) == 6
    )


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int = 32) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=length
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
