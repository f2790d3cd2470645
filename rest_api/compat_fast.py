"""POST /get_prediction, the fast-ml client's call, as a plain ASGI endpoint in front of the
FastAPI route of the same path (rest_api/routes/compat.py).

The edge (request log, auth and role, body limits) has run before it. A complete body of the
plain form (rest_api/upload_form.py) is evaluated here: the same evaluation and the same
answer as the FastAPI route, without FastAPI's form spooling and dependency solving. Any other
request (a query string, a chunked or large body, any form but the plain one) is handed, with
the body read so far, to the FastAPI route, which answers it as it always has. So the
FastAPI route's Swagger entry documents what runs, errors included.
"""

from __future__ import annotations

import io

import orjson
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from ML.errors import FastMLError
from ML.evaluation import Scores
from rest_api.auth import authorize
from rest_api.backend import Backend
from rest_api.errors import status_and_code
from rest_api.plain_route import PlainRoute, read_body, send_json
from rest_api.request_headers import first_header
from rest_api.upload_form import MAX_PLAIN_FORM_BYTES, read_plain_form
from rest_api.users import Role

PATH = "/get_prediction"
DEFAULT_MODEL = "default"
NEEDED_ROLE = Role.PREDICTOR
# Set on a request handed on to FastAPI, so that this route lets it pass the second time.
HANDED_ON_SCOPE_KEY = "fastml.handed_on"


def compat_body(status: int, output: str) -> bytes:
    """The fast-ml answer shape: `{"status", "code", "output"}`."""
    return orjson.dumps(
        {"status": "success" if status < 400 else "error", "code": status, "output": output}
    )


def accuracy_output(accuracy: float) -> str:
    return f"Test accuracy : {accuracy * 100:.2f} %"


class GetPredictionEndpoint:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # None, unread, for a chunked body or a large one that FastAPI spools to disk
        body = await read_body(scope, receive, MAX_PLAIN_FORM_BYTES)
        form = None
        if body is not None and not scope["query_string"]:
            form = read_plain_form(first_header(scope, b"content-type"), body)
        if form is None:
            await _hand_on(scope, receive if body is None else _replay(body, receive), send)
            return
        authorize(scope["state"].get("user"), NEEDED_ROLE)
        backend: Backend = scope["app"].state.backend
        try:
            _, metrics = await backend.evaluate(
                DEFAULT_MODEL, io.BytesIO(form.csv), form.target_variable, Scores.ACCURACY
            )
        except FastMLError as error:
            status = status_and_code(error)[0]
            await send_json(send, status, compat_body(status, error.message))
            return
        await send_json(send, 200, compat_body(200, accuracy_output(metrics["accuracy"])))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` first, then what `receive` gives (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _hand_on(scope: Scope, receive: Receive, send: Send) -> None:
    """Route the request again, past this route: to the FastAPI route of the same path."""
    scope[HANDED_ON_SCOPE_KEY] = True
    await scope["app"].router(scope, receive, send)


class GetPredictionRoute(PlainRoute):
    """Matched before FastAPI's route of the same path, for POST only."""

    needed_role = NEEDED_ROLE  # read by the edge, like a RoleCheck

    def __init__(self) -> None:
        super().__init__(
            PATH,
            GetPredictionEndpoint(),
            methods=["POST"],
            name="get_prediction_fast",
            include_in_schema=False,  # FastAPI's route documents it
        )

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(HANDED_ON_SCOPE_KEY):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}  # another method: FastAPI's route answers its 405
        return match, child_scope
