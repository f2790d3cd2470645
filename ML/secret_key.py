"""The server's signing secret: FASTML_SECRET_KEY, or one generated once and kept 0600 on disk."""

from __future__ import annotations

import logging
import secrets
import stat
from pathlib import Path

from ML.errors import StoreUnavailable
from ML.private_files import write_private_file

logger = logging.getLogger(__name__)

SECRET_FILE_NAME = "secret_key"  # noqa: S105 (a file name, not a secret)
MIN_KEY_CHARS = 16
GENERATED_KEY_BYTES = 32
HOW_TO_MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'


def load_or_create_secret(configured: str | None, state_dir: Path) -> bytes:
    """The configured key if set, else the key in `state_dir/secret_key`, created on first use.

    Several gunicorn workers may start at once: exactly one of them creates the file and
    every one of them returns the same key.
    """
    if configured:
        if len(configured) < MIN_KEY_CHARS:
            raise ValueError(
                f"FASTML_SECRET_KEY is {len(configured)} characters; use at least {MIN_KEY_CHARS}, "
                f"e.g. make one with: {HOW_TO_MAKE_A_KEY}"
            )
        return configured.encode("utf-8")
    path = state_dir / SECRET_FILE_NAME
    if write_private_file(path, secrets.token_hex(GENERATED_KEY_BYTES) + "\n"):
        logger.info("generated a new secret key in %s", path)
    return _read_secret_file(path)


def load_secret(configured: str | None, state_dir: Path) -> bytes:
    """The configured key, else the generated one; never creates it: StoreUnavailable when
    its file is missing (the state folder moved away), so nothing is signed with a new key."""
    if configured:
        return load_or_create_secret(configured, state_dir)
    path = state_dir / SECRET_FILE_NAME
    try:
        return _read_secret_file(path)
    except FileNotFoundError:
        raise StoreUnavailable(
            f"the secret key file {path} is missing (state folder moved, deleted or "
            "unmounted?); put it back, or set FASTML_SECRET_KEY to the key it held"
        ) from None


def _read_secret_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning(
            "secret key file %s has mode %o and is readable by other users; run: chmod 600 %s",
            path,
            mode,
            path,
        )
    text = path.read_text(encoding="utf-8").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(
            f"secret key file {path} does not hold at least {MIN_KEY_CHARS} hex-encoded bytes; "
            "delete it to generate a new key (models signed with the old key become unusable) "
            "or set FASTML_SECRET_KEY"
        )
    return key
