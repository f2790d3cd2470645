"""The cross-site request guard: what another site's page could send unasked is refused;
same-origin pages, preflighted CORS calls and non-browser clients pass."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.iris import ROW

CSV_UPLOAD: dict[str, Any] = {
    "files": {"csv_file": ("a.csv", b"a,b\n1,x\n2,y\n")},
    "data": {"target_variable": "b"},
}


@pytest.mark.parametrize(
    "browser_headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another origin too
        {"Origin": "http://evil.example"},  # a browser without Sec-Fetch-Site
        {"Origin": "null"},  # a sandboxed frame or a data: page
        {"Origin": "http://testserver:8001", "Host": "testserver:8000"},  # another port
        {"Origin": "http://testserver", "Host": "testserver:nonsense"},  # a 403, not a 500
    ],
)
def test_a_form_post_from_another_site_is_refused_before_auth(
    client: TestClient, browser_headers: dict[str, str]
) -> None:
    answer = client.post(
        "/models/guarded/train", headers={**browser_headers, "Authorization": ""}, **CSV_UPLOAD
    )
    assert answer.status_code == 403, answer.text
    assert "cross-site request forgery" in answer.json()["error"]["message"]
    assert client.get("/jobs").json()["jobs"] == []


def test_text_plain_and_bodiless_posts_from_another_site_are_refused(client: TestClient) -> None:
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    text = client.post(
        "/models/iris/predict",
        content=b'{"rows": []}',
        headers={**cross_site, "Content-Type": "text/plain"},
    )
    assert text.status_code == 403
    assert client.post("/models/iris/predict", headers=cross_site).status_code == 403


def test_the_same_origin_and_clients_that_are_not_browsers_pass(client: TestClient) -> None:
    for headers in (
        {},  # curl, scripts, the load tester
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed in the address bar
        {"Origin": "http://testserver"},  # this host, from a browser without Sec-Fetch-Site
        # Behind a proxy that passes nginx's $host, which has no port:
        {"Origin": "http://testserver:8000", "Host": "testserver"},
    ):
        answer = client.post("/models/guarded/train", headers=headers, **CSV_UPLOAD)
        assert answer.status_code == 202, (headers, answer.text)


@pytest.mark.usefixtures("iris_model")
def test_requests_that_needed_a_cors_preflight_pass(client: TestClient) -> None:
    # JSON bodies, PUT and DELETE cannot leave another site's page without the CORS
    # preflight, which only a CORS set-up the operator chose approves (README: CORS).
    cross_site = {"Sec-Fetch-Site": "cross-site", "Origin": "https://dashboard.example"}
    predicted = client.post("/models/iris/predict", json={"rows": [ROW]}, headers=cross_site)
    assert predicted.status_code == 200, predicted.text
    promoted = client.put("/models/iris/current", json={"version": 1}, headers=cross_site)
    assert promoted.status_code == 200, promoted.text
    assert client.get("/models/iris", headers=cross_site).status_code == 200
    # A dashboard's upload says so with a header no form can send (README: CORS).
    marked = {**cross_site, "X-Requested-With": "dashboard"}
    trained = client.post("/models/iris/train", headers=marked, **CSV_UPLOAD)
    assert trained.status_code == 202, trained.text
