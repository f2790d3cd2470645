"""Calls on a fastml server shared by tests, benchmarks and the load client.

Basic auth, multipart bodies, training a model and waiting for its job. They take any client
with httpx's `get`/`post` shape: an `httpx.Client`, FastAPI's `TestClient`, or the stdlib
`LocalClient` below (the benchmark's; httpx is a test dependency only).
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

JOB_DEADLINE_SECONDS = 120.0
JOB_POLL_SECONDS = 0.05
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class ApiError(Exception):
    """The server refused a call, or a job did not reach the wanted status in time."""


class Answer(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class ApiClient(Protocol):
    def get(self, url: str) -> Answer: ...

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> Answer: ...


def basic_auth_header(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def basic_auth(user: tuple[str, str]) -> dict[str, str]:
    """The Authorization header of `(name, password)`, as a headers dict."""
    return {"Authorization": basic_auth_header(*user)}


def multipart_body(
    fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes]]
) -> tuple[str, bytes]:
    """(content type, body) of a multipart/form-data upload; `files` maps name -> (filename, data).

    Built once as bytes: a load test sends the same body many times, which aiohttp's FormData
    cannot do.
    """
    values = [value.encode() for value in fields.values()] + [data for _, data in files.values()]
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in value for value in values):
        boundary = secrets.token_hex(16)
    parts = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    for name, (filename, data) in files.items():
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{safe_name}"\r\nContent-Type: text/csv\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


@dataclass(frozen=True)
class LocalAnswer:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class LocalClient:
    """A stdlib HTTP client for a server on this machine: one connection per request, no proxy."""

    def __init__(self, base_url: str, user: tuple[str, str], timeout: float = 30.0) -> None:
        self.host = base_url.removeprefix("http://").rstrip("/")
        self.headers = basic_auth(user)
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> LocalAnswer:
        connection = http.client.HTTPConnection(self.host, timeout=self.timeout)
        try:
            connection.request(
                method, url, body=content, headers={**self.headers, **(headers or {})}
            )
            answer = connection.getresponse()
            return LocalAnswer(answer.status, answer.read())
        finally:
            connection.close()

    def get(self, url: str) -> LocalAnswer:
        return self.request("GET", url)

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> LocalAnswer:
        return self.request("POST", url, content, headers)


def submit_training(
    client: ApiClient, name: str, csv_path: Path, target: str = "species", **form: str
) -> Answer:
    """POST /models/{name}/train with the CSV and form fields; the answer as it came."""
    content_type, body = multipart_body(
        {"target_variable": target, **form}, {"csv_file": (csv_path.name, csv_path.read_bytes())}
    )
    return client.post(
        f"/models/{name}/train", content=body, headers={"Content-Type": content_type}
    )


def train(
    client: ApiClient, name: str, csv_path: Path, target: str = "species", **form: str
) -> dict[str, Any]:
    """Train `name` and wait for the job; the finished job record (any final status)."""
    answer = submit_training(client, name, csv_path, target, **form)
    if answer.status_code != 202:
        raise ApiError(f"training was refused with status {answer.status_code}: {answer.text}")
    return wait_for_job(client, answer.json()["id"])


def wait_for_job(
    client: ApiClient,
    job_id: str,
    statuses: frozenset[str] = FINISHED,
    deadline_seconds: float = JOB_DEADLINE_SECONDS,
) -> dict[str, Any]:
    """Poll GET /jobs/{id} until its status is one of `statuses`; the job record."""
    deadline = time.monotonic() + deadline_seconds
    job: dict[str, Any] = {}
    for _ in range(int(deadline_seconds / JOB_POLL_SECONDS) + 1):
        answer = client.get(f"/jobs/{job_id}")
        if answer.status_code != 200:
            raise ApiError(f"GET /jobs/{job_id} answered {answer.status_code}: {answer.text}")
        job = answer.json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            break
        time.sleep(JOB_POLL_SECONDS)
    raise ApiError(
        f"job {job_id} did not reach {sorted(statuses)} in {deadline_seconds:.0f} s: {job}"
    )


def submit_prediction_job(
    client: ApiClient, name: str, csv_data: bytes, *, proba: bool = False
) -> Answer:
    """POST /models/{name}/predict/jobs with the CSV; the answer as it came."""
    content_type, body = multipart_body({}, {"csv_file": ("batch.csv", csv_data)})
    query = "?proba=true" if proba else ""
    return client.post(
        f"/models/{name}/predict/jobs{query}", content=body, headers={"Content-Type": content_type}
    )


def predict_as_job(
    client: ApiClient, name: str, csv_data: bytes, *, proba: bool = False
) -> dict[str, Any]:
    """Submit a batch-prediction job and wait for it; the finished job record."""
    answer = submit_prediction_job(client, name, csv_data, proba=proba)
    if answer.status_code != 202:
        raise ApiError(f"the job was refused with status {answer.status_code}: {answer.text}")
    return wait_for_job(client, answer.json()["id"])
