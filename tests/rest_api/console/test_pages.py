"""The console's pages through the app: roles at the edge, escaping, the page policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from testing.fastml_api import basic_auth, train
from tests.users import PREDICTOR

TRAINER_PAGES = ("/ui/models", "/ui/models/iris", "/ui/train", "/ui/jobs")
EVERYONES_PAGES = ("/ui/predict", "/ui/predict/iris", "/ui/server")


@pytest.mark.usefixtures("iris_model")
def test_every_page_renders_with_a_strict_policy(client: TestClient) -> None:
    for path in (*TRAINER_PAGES, *EVERYONES_PAGES):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    model = client.get("/ui/models/iris").text
    assert model.count("<svg") == 1 and "setosa" in model


@pytest.mark.usefixtures("iris_model")
def test_a_predictor_is_sent_to_predict_and_refused_the_rest(client: TestClient) -> None:
    predictor = basic_auth(PREDICTOR)
    home = client.get("/ui", headers=predictor, follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/ui/predict"
    for path in TRAINER_PAGES:
        assert client.get(path, headers=predictor).status_code == 403, path
    for path in EVERYONES_PAGES:
        page = client.get(path, headers=predictor)
        assert page.status_code == 200, path
        assert 'href="/ui/train"' not in page.text


@pytest.mark.usefixtures("iris_model")
def test_uploaded_names_are_escaped(client: TestClient, tmp_path: Path) -> None:
    rows = "".join(f"{i},{'<b>a</b>' if i % 2 else 'b'}\n" for i in range(20))
    csv_path = tmp_path / "nasty.csv"
    csv_path.write_text(f"<script>x</script>,label\n{rows}")
    assert train(client, "nasty", csv_path, target="label")["status"] == "succeeded"
    for path in ("/ui/models/nasty", "/ui/predict/nasty"):
        page = client.get(path).text
        assert "<script>x" not in page and "<b>a</b>" not in page, path
    assert "&lt;script&gt;x&lt;/script&gt;" in client.get("/ui/predict/nasty").text
    assert "&lt;b&gt;a&lt;/b&gt;" in client.get("/ui/models/nasty").text


def test_only_the_consoles_own_files_are_served(client: TestClient) -> None:
    assert client.get("/ui/static/console.js").headers["content-type"].startswith("text/javascript")
    for name in ("pages.py", "%2e%2e%2fpages.py", "console.js.map"):
        assert client.get(f"/ui/static/{name}").status_code == 404, name
