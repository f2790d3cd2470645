"""A request's headers, read once: every check of the edge and the predict route asks here."""

from __future__ import annotations

from starlette.types import Scope

# An ASGI scope extension key (namespaced, as the spec asks): the request's headers as a dict.
HEADERS_SCOPE_KEY = "fastml.headers"


def request_headers(scope: Scope) -> dict[bytes, bytes]:
    """Every header by lower-case name, the first of repeated ones (as Starlette's Headers
    reads them): built once per request, in C, and kept in the scope. The edge reads the
    headers it needs from it with plain dict lookups, not a call per header."""
    headers: dict[bytes, bytes] | None = scope.get(HEADERS_SCOPE_KEY)
    if headers is None:
        headers = scope[HEADERS_SCOPE_KEY] = dict(reversed(scope["headers"]))
    return headers


def first_header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case), or None, as Starlette's Headers reads it."""
    return request_headers(scope).get(name)
