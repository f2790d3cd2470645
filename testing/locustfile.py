"""Locust users firing the same three calls as async_predictions.py, for interactive load runs.

    pip install locust
    FASTML_USER=admin FASTML_PASSWORD=... locust -f testing/locustfile.py --host http://127.0.0.1:8000

Environment: FASTML_USER / FASTML_PASSWORD (else SERVICE_USER / SERVICE_PASS, else the
server's generated admin, as async_predictions.py finds it), FASTML_MODEL (default iris),
FASTML_CSV (default ML/data/test.csv), FASTML_TARGET (default species), FASTML_URL (or
--host; default http://127.0.0.1:8000).
Locust is not a project dependency. Unlike async_predictions.py it does not refuse remote
hosts: the host is always named explicitly.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from locust import HttpUser, constant, task

if __package__ in (None, ""):
    # Locust imports this file by path: make the project root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testing.async_predictions import prepare_requests
from testing.fastml_api import basic_auth_header
from testing.load_config import DEFAULT_CSV, LoadConfig, Payload


def _config(payload: Payload) -> LoadConfig:
    return LoadConfig(
        model=os.environ.get("FASTML_MODEL", "iris"),
        payload=payload,
        csv_path=Path(os.environ.get("FASTML_CSV", str(DEFAULT_CSV))),
        target=os.environ.get("FASTML_TARGET", "species"),
    )


# Bodies are built once per Locust process, exactly as the async client builds them.
_JSON = prepare_requests(_config(Payload.JSON))
_CSV = prepare_requests(_config(Payload.CSV))
_COMPAT = prepare_requests(_config(Payload.COMPAT))
_MODEL = _config(Payload.JSON).model


class FastMLUser(HttpUser):
    """One client sending predictions back to back; JSON rows are by far the most common call.

    For more requests per Locust process, derive from `locust.FastHttpUser` instead.
    """

    host = os.environ.get("FASTML_URL", "http://127.0.0.1:8000")
    wait_time = constant(0)

    def on_start(self) -> None:
        config = _config(Payload.JSON)
        self.auth_header = basic_auth_header(config.credentials.user, config.credentials.password)
        self.json_bodies = itertools.cycle(_JSON.bodies)

    def _post(self, path: str, content_type: str, body: bytes, name: str) -> None:
        headers = {"Authorization": self.auth_header, "Content-Type": content_type}
        self.client.post(path, data=body, headers=headers, name=name)

    @task(10)
    def predict_json(self) -> None:
        body = next(self.json_bodies)
        self._post(f"/models/{_MODEL}/predict", _JSON.content_type, body, "predict json")

    @task(2)
    def predict_csv(self) -> None:
        body = _CSV.bodies[0]
        self._post(f"/models/{_MODEL}/predict/csv", _CSV.content_type, body, "predict csv")

    @task(1)
    def get_prediction(self) -> None:
        body = _COMPAT.bodies[0]
        self._post("/get_prediction", _COMPAT.content_type, body, "get_prediction (fast-ml)")
