"""The edge: request id and log line, cross-site refusal, authentication, body limits.

One plain ASGI middleware in FastAPI's own stack (create_app lists it). It runs before any
route reads the body, so an unauthenticated or oversized upload is refused unread. A
forker's `app.add_middleware(...)` after create_app goes outside it (CORS belongs there: a
preflight needs no credentials, and 401s carry CORS headers too).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from python_multipart.multipart import parse_options_header
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_api.auth import Authenticator, AuthFailed, RoleCheck, User, authorize
from rest_api.body_errors import SEND_A_FORM
from rest_api.cross_origin import CROSS_SITE_MESSAGE, could_skip_preflight, is_cross_site
from rest_api.errors import ApiError, send_error
from rest_api.metrics import PENDING
from rest_api.request_headers import request_headers
from rest_api.request_log import RequestLogWriter
from rest_api.users import Role

MAX_REQUEST_ID_LENGTH = 128
MAX_BOUNDARY_LENGTH = 70  # RFC 2046, section 5.1.1
PUBLIC_PATHS = frozenset({"/", "/health/live", "/health/ready"})
REALM_HEADER = (b"www-authenticate", b'Basic realm="fastml", charset="UTF-8"')


class EdgeMiddleware:
    """The edge, one layer, before any route reads the body: gives every request an id and
    later its log line and metrics; refuses, in this order, a cross-site form post
    (rest_api/cross_origin.py), bad or missing credentials and a role the route does not allow
    (rest_api/auth.py), and an oversized body.

    One layer rather than one per check: each layer costs every request a coroutine frame on
    the way in and on every resumption; folding four into one cut the predict route's cost by
    about 5% (callgrind instruction counts, docs/benchmarks.md). Each check is still its own
    function. Never logs bodies, query strings or headers, so no password or CSV cell reaches
    the log.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        writer: RequestLogWriter,
        authenticator: Authenticator,
        roles: RoleTable,
        max_upload_bytes: int,
        max_json_bytes: int,
    ) -> None:
        self.app = app
        self.writer = writer
        self.authenticator = authenticator
        self.roles = roles
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes
        # A random per-process prefix and a counter: unique ids without a uuid per request.
        self._id_prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = request_headers(scope)
        request_id = _incoming_request_id(headers) or f"{self._id_prefix}{next(self._counter):x}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            try:
                admitted = self._admit(scope, headers, receive)
                if admitted is None:  # a login this worker has not verified yet
                    admitted = await self._admit_verifying(scope, headers, receive)
            except AuthFailed as failure:
                await _send_auth_failure(scope, send_with_id, failure)
            except ApiError as refusal:
                await send_error(scope, send_with_id, refusal.status, refusal.message)
            else:
                await self.app(scope, admitted, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            user = state.get("user")
            path: str = scope["path"]
            if not path.isprintable():  # a %0A in the URL must not forge a log line
                path = path.encode("unicode_escape").decode("ascii")
            self.writer.write_request(
                scope["method"],
                path,
                status,
                elapsed * 1000,
                user.name if user is not None else "-",
                request_id,
            )
            route = scope.get("route")
            PENDING.observe_request(
                scope["method"], getattr(route, "path", None) or "unmatched", status, elapsed
            )

    def _admit(self, scope: Scope, headers: dict[bytes, bytes], receive: Receive) -> Receive | None:
        """The receive the app reads the body with; None when only `_admit_verifying` can
        tell, for a login this worker has not verified before. Refuses with AuthFailed or
        ApiError.

        A plain call, not a coroutine (one costs a request ~1,000 instructions): an admitted
        request with a login verified before awaits nothing at the edge."""
        if could_skip_preflight(scope) and is_cross_site(scope):
            raise ApiError(403, CROSS_SITE_MESSAGE)
        if scope["path"] not in PUBLIC_PATHS:
            user = self.authenticator.known_user(headers.get(b"authorization"), _client(scope))
            if user is None:
                return None
            scope["state"]["user"] = user
            self._check_role(scope, user)
        return self._limited_receive(headers, receive)

    async def _admit_verifying(
        self, scope: Scope, headers: dict[bytes, bytes], receive: Receive
    ) -> Receive:
        """`_admit`'s answer once the login is verified (the cross-site check has passed)."""
        authorization = headers.get(b"authorization")
        user = await self.authenticator.authenticate(authorization, _client(scope))
        scope["state"]["user"] = user
        self._check_role(scope, user)
        return self._limited_receive(headers, receive)

    def _check_role(self, scope: Scope, user: User) -> None:
        """An ApiError (403) if the user's role may not call the request's route."""
        if user.role is not Role.ADMIN:  # an admin may call every route
            needed = self.roles.needed_role(scope["method"], scope["path"])
            if needed is not None and not user.role.allows(needed):
                authorize(user, needed)  # the one place that words the refusal

    def _limited_receive(self, headers: dict[bytes, bytes], receive: Receive) -> Receive:
        """Refuse (ApiError) an oversized body from its Content-Length before a byte is read;
        count the bytes of one sent without it (chunked)."""
        content_length = headers.get(b"content-length")
        content_type = headers.get(b"content-type")
        is_upload = content_type is not None and content_type.lower().startswith(b"multipart/")
        limit = self.max_upload_bytes if is_upload else self.max_json_bytes
        if is_upload and content_type is not None:
            problem = multipart_boundary_problem(content_type)
            if problem is not None:
                raise ApiError(400, problem)
        if content_length is None:
            return _counting(receive, limit, is_upload)
        if not content_length.isdigit():
            raise ApiError(400, "Content-Length must be a whole number of bytes")
        if int(content_length) > limit:
            message = over_limit_message(f"of {int(content_length)} bytes", limit, is_upload)
            raise ApiError(413, message)
        return receive


def _client(scope: Scope) -> str:
    """The client's address, as the login throttle counts it."""
    return scope["client"][0] if scope.get("client") else "unknown"


def _incoming_request_id(headers: dict[bytes, bytes]) -> str | None:
    """Keep a caller's X-Request-ID when it is short and printable, for tracing across services."""
    value = headers.get(b"x-request-id")
    if value is None:
        return None
    text = value.decode("latin-1")
    if 0 < len(text) <= MAX_REQUEST_ID_LENGTH and text.isprintable() and " " not in text:
        return text
    return None


@dataclass(frozen=True)
class _RouteRole:
    path: re.Pattern[str]
    methods: frozenset[str]
    role: Role


class RoleTable:
    """The role each route needs, known at the edge: read from the routes' RoleCheck
    dependencies (and a plain route's `needed_role`), so it is declared once, on the route."""

    def __init__(self, sources: Iterable[APIRouter | BaseRoute]) -> None:
        self._routes: list[_RouteRole] = []
        for source in sources:
            if isinstance(source, APIRouter):
                for route in source.routes:
                    self._add(route, [*source.dependencies, *getattr(route, "dependencies", [])])
            else:
                self._add(source, [])

    def needed_role(self, method: str, path: str) -> Role | None:
        for route in self._routes:
            if method in route.methods and route.path.match(path):
                return route.role
        return None

    def _add(self, route: BaseRoute, dependencies: list[Any]) -> None:
        role: Role | None = getattr(route, "needed_role", None)
        for dependency in dependencies:
            check = dependency.dependency
            if isinstance(check, RoleCheck) and (role is None or check.role.allows(role)):
                role = check.role
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if role is not None and path is not None and methods:
            self._routes.append(_RouteRole(compile_path(path)[0], frozenset(methods), role))


async def _send_auth_failure(scope: Scope, send: Send, failure: AuthFailed) -> None:
    headers = [REALM_HEADER] if failure.status == 401 else []
    if failure.retry_after is not None:
        headers.append((b"retry-after", str(failure.retry_after).encode()))
    await send_error(scope, send, failure.status, failure.message, headers)


def multipart_boundary_problem(content_type: bytes) -> str | None:
    """Why a multipart Content-Type's boundary is too long to use (python-multipart takes up
    to 256 characters, no client sends more than 70), or None. A missing boundary is left
    to the route: a JSON route answers 415, an upload route names the fix."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if boundary is not None and len(boundary) > MAX_BOUNDARY_LENGTH:
        return (
            f"the multipart boundary is {len(boundary)} characters long; RFC 2046 allows "
            f"1 to {MAX_BOUNDARY_LENGTH}: {SEND_A_FORM}"
        )
    return None


def over_limit_message(size: str, limit: int, is_upload: bool) -> str:
    """What a 413 for a body over its limit says: the sizes, and what to do instead."""
    if is_upload:
        return (
            f"an upload {size} is over the limit of {limit} bytes; send a smaller file, or "
            "raise FASTML_MAX_UPLOAD_BYTES"
        )
    return (
        f"a request body {size} is over the limit of {limit} bytes; send large inputs as a CSV "
        "file to /models/{name}/predict/csv, or raise FASTML_MAX_JSON_BYTES"
    )


def _counting(receive: Receive, limit: int, is_upload: bool) -> Receive:
    """A receive that fails with 413 once a body without Content-Length passes `limit`.

    The route reading the body answers it (FastAPI lets an HTTPException through); the
    connection is closed after it, as the client may still be sending.
    """
    received = 0

    async def receive_counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(
                    413,
                    over_limit_message(f"of more than {limit} bytes", limit, is_upload),
                    headers={"connection": "close"},
                )
        return message

    return receive_counted
