"""read_body, as both plain routes read their bodies: whole, bounded, or None."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rest_api.plain_route import read_body


def _receive(*messages: dict[str, Any]) -> Any:
    """An ASGI server's receive that gives `messages` in turn."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    return receive


def _scope(content_length: bytes | None) -> dict[str, Any]:
    headers = [] if content_length is None else [(b"content-length", content_length)]
    return {"type": "http", "headers": headers}


def _part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_body_in_several_messages_is_joined() -> None:
    receive = _receive(_part(b'{"rows"', True), _part(b"", True), _part(b":[]}", False))
    assert asyncio.run(read_body(_scope(None), receive)) == b'{"rows":[]}'


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "http.disconnect"}],
        [_part(b"part", True), {"type": "http.disconnect"}],
    ],
)
def test_a_client_gone_before_its_body_ends_gives_none(messages: list[dict[str, Any]]) -> None:
    assert asyncio.run(read_body(_scope(None), _receive(*messages))) is None


@pytest.mark.parametrize("content_length", [None, b"11", b"1e3", b"-1"])
def test_with_a_bound_a_body_not_known_to_fit_is_left_unread(content_length: bytes | None) -> None:
    receive = _receive(_part(b"not read", False))
    assert asyncio.run(read_body(_scope(content_length), receive, max_length=10)) is None
    assert asyncio.run(receive()) == _part(b"not read", False)  # still there for FastAPI


def test_with_a_bound_a_body_that_fits_is_read() -> None:
    receive = _receive(_part(b"0123456789", False))
    assert asyncio.run(read_body(_scope(b"10"), receive, max_length=10)) == b"0123456789"
