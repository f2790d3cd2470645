"""Raw HTTP/1.1 over a socket, for tests that must send what no well-behaved client would."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent until the server closed (or the deadline)
    closed: bool  # the server closed the connection before the deadline

    def json(self) -> Any:
        return json.loads(self.body)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def parse_answer(data: bytes) -> tuple[int | None, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return None, {}, data
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or the deadline passes (False)."""
    received = b""
    for _ in range(100_000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return received, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def exchange(
    url: str,
    pieces: list[bytes],
    *,
    pause: float = 0.0,
    wait: float = 15.0,
) -> tuple[RawAnswer, bool]:
    """Send `pieces` (with `pause` seconds between them) from a thread, since the server may
    stop reading, and read the answer until the server closes or `wait` seconds pass.
    Also returns whether every piece was sent: False when the server hung up first."""
    sent_all = threading.Event()
    with socket.create_connection(address(url), timeout=5) as sock:
        start = time.monotonic()

        def send() -> None:
            try:
                for index, piece in enumerate(pieces):
                    if index and pause:
                        time.sleep(pause)
                    sock.sendall(piece)
            except OSError:
                return  # the server closed: what it answered is the point
            sent_all.set()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        data, closed = read_until_closed(sock, start + wait)
        seconds = time.monotonic() - start
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # unblocks the sender
    sender.join(timeout=wait)
    status, headers, body = parse_answer(data)
    return RawAnswer(status, headers, body, seconds, closed), sent_all.is_set()


def request_bytes(
    method: str, path: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
