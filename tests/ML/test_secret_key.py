"""Tests for ML/secret_key.py: configured key, generated 0600 key file, race-free creation."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from ML.private_files import write_private_file
from ML.secret_key import SECRET_FILE_NAME, load_or_create_secret

RACERS = 6
DEADLINE_SECONDS = 60.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generates_a_private_key_file_in_a_new_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "state" / "nested"

    key = load_or_create_secret(None, state_dir)

    key_path = state_dir / SECRET_FILE_NAME
    assert len(key) == 32
    assert key_path.read_text(encoding="utf-8").strip() == key.hex()
    assert _mode(key_path) == 0o600
    assert _mode(state_dir) == 0o700
    assert [p.name for p in state_dir.iterdir()] == [SECRET_FILE_NAME]


def test_second_call_returns_the_same_key(tmp_path: Path) -> None:
    first = load_or_create_secret(None, tmp_path)
    second = load_or_create_secret("", tmp_path)

    assert first == second


def test_configured_key_wins_and_writes_nothing(tmp_path: Path) -> None:
    load_or_create_secret(None, tmp_path / "with-file")
    configured = "a-configured-key-of-enough-length"

    assert load_or_create_secret(configured, tmp_path / "with-file") == configured.encode()
    assert load_or_create_secret(configured, tmp_path / "empty") == configured.encode()
    assert not (tmp_path / "empty").exists()


def test_short_configured_key_is_rejected_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"FASTML_SECRET_KEY.*at least 16.*token_hex"):
        load_or_create_secret("too-short", tmp_path)


def test_corrupt_key_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE_NAME).write_text("not hex at all\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"secret key file .* delete it"):
        load_or_create_secret(None, tmp_path)


def test_write_private_file_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "admin_password"

    assert write_private_file(path, "first\n") is True
    assert write_private_file(path, "second\n") is False

    assert path.read_text(encoding="utf-8") == "first\n"
    assert _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["admin_password"]


def _race_for_secret(state_dir: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=DEADLINE_SECONDS)
    results.put(load_or_create_secret(None, Path(state_dir)).hex())


def test_racing_processes_agree_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    processes = [
        context.Process(target=_race_for_secret, args=(str(tmp_path), barrier, results))
        for _ in range(RACERS)
    ]
    for process in processes:
        process.start()
    try:
        keys = [results.get(timeout=DEADLINE_SECONDS) for _ in range(RACERS)]
    finally:
        for process in processes:
            process.join(timeout=DEADLINE_SECONDS)
            if process.is_alive():
                process.kill()

    assert len(set(keys)) == 1
    assert (tmp_path / SECRET_FILE_NAME).read_text(encoding="utf-8").strip() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE_NAME]
    assert all(process.exitcode == 0 for process in processes)
