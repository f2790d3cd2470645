"""Size-based rotation of the request log when several writers (workers) share it."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from rest_api.logging_config import LogRotation
from rest_api.request_log import RequestLogWriter

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ INFO fastml\.requests GET /x 200 "
    r"1\.00ms user=- request_id=(?P<id>w[01]-\d+)$"
)


def log_files(log_path: Path) -> list[Path]:
    return sorted(log_path.parent.glob(f"{log_path.name}*"))


def request_ids_in(log_path: Path) -> list[str]:
    ids = []
    for path in log_files(log_path):
        for line in path.read_text().splitlines():
            match = LINE.match(line)
            assert match is not None, f"torn or foreign line in {path.name}: {line!r}"
            ids.append(match["id"])
    return ids


def write_batches(writers: list[RequestLogWriter], batches: int, lines_per_batch: int) -> None:
    """Each writer in turn appends a batch and flushes it, as workers do every 0.2 s."""

    async def run() -> None:
        for batch in range(batches):
            for number, writer in enumerate(writers):
                for line in range(lines_per_batch):
                    request_id = f"w{number}-{batch * lines_per_batch + line}"
                    writer.write(f"GET /x 200 1.00ms user=- request_id={request_id}")
                writer.flush()
        for writer in writers:
            writer.close()

    asyncio.run(run())


def test_two_writers_rotate_by_size_without_losing_or_tearing_a_line(tmp_path: Path) -> None:
    log_path = tmp_path / "ML_server.log"
    max_bytes = 4_000
    writers = [RequestLogWriter(log_path, max_bytes, backup_count=100) for _ in range(2)]

    write_batches(writers, batches=40, lines_per_batch=5)

    ids = request_ids_in(log_path)
    expected = {f"w{number}-{index}" for number in range(2) for index in range(200)}
    assert sorted(ids) == sorted(expected)  # each line exactly once
    files = log_files(log_path)
    assert len(files) >= 5, [path.name for path in files]
    assert all(path.stat().st_size <= max_bytes for path in files)
    # Newest last in the live file, oldest in the highest-numbered backup.
    oldest = log_path.with_name(f"{log_path.name}.{len(files) - 1}")
    assert "request_id=w0-0\n" in oldest.read_text()
    assert "request_id=w1-199\n" in log_path.read_text()


def test_only_backup_count_rotated_files_are_kept(tmp_path: Path) -> None:
    log_path = tmp_path / "ML_server.log"
    writers = [RequestLogWriter(log_path, max_bytes=2_000, backup_count=2)]

    write_batches(writers, batches=40, lines_per_batch=5)

    assert [path.name for path in log_files(log_path)] == [
        "ML_server.log",
        "ML_server.log.1",
        "ML_server.log.2",
    ]
    assert "w0-199" in log_path.read_text()


def test_a_writer_follows_a_log_moved_by_logrotate(tmp_path: Path) -> None:
    log_path = tmp_path / "ML_server.log"
    writer = RequestLogWriter(log_path, max_bytes=0, backup_count=1)  # 0: never rotates itself

    async def run() -> None:
        writer.write("GET /x 200 1.00ms user=- request_id=w0-1")
        writer.flush()
        log_path.rename(tmp_path / "ML_server.log.1")  # logrotate without copytruncate
        writer.write("GET /x 200 1.00ms user=- request_id=w0-2")
        writer.close()

    asyncio.run(run())

    assert "request_id=w0-1" in (tmp_path / "ML_server.log.1").read_text()
    assert "request_id=w0-2" in log_path.read_text()
    assert sorted(request_ids_in(log_path)) == ["w0-1", "w0-2"]


def test_without_a_limit_the_log_only_grows(tmp_path: Path) -> None:
    log_path = tmp_path / "ML_server.log"

    write_batches([RequestLogWriter(log_path, max_bytes=0)], batches=40, lines_per_batch=5)

    assert log_files(log_path) == [log_path]
    assert len(request_ids_in(log_path)) == 200


def test_a_batch_over_the_limit_spreads_over_files_of_whole_lines(tmp_path: Path) -> None:
    # Under load one batch (0.2 s of request lines) can hold more than a small limit.
    log_path = tmp_path / "ML_server.log"
    rotation = LogRotation(log_path, max_bytes=100, backup_count=10)
    lines = [f"line {index:02d} {'x' * 20}\n".encode() for index in range(12)]
    os.close(rotation.append(rotation.append(None, lines[0]), b"".join(lines[1:])))

    files = list(tmp_path.glob("ML_server.log*"))
    assert len(files) >= 3
    assert all(0 < path.stat().st_size <= 100 for path in files)
    written = b"".join(path.read_bytes() for path in files)
    assert sorted(written.splitlines(keepends=True)) == lines  # each line once, whole
