"""The console's pages through the app: roles at the edge, escaping, the page policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ML.config import Settings
from ML.features import MAX_RECORDED_CATEGORIES
from ML.jobs import PredictionJobOptions
from testing.fastml_api import basic_auth, predict_as_job, train
from tests.iris import IRIS_DIR
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


def test_the_predict_form_lists_each_categorical_features_recorded_categories(
    client: TestClient, tmp_path: Path
) -> None:
    # color: a choice of three (one written as HTML); ticket: one per row, too many to list.
    colors = ("red", "blue", "<script>x</script>")
    rows = [
        f'{i % 7},"{colors[i % 3]}",t{i},{"yes" if i % 3 == 0 else "no"}'
        for i in range(MAX_RECORDED_CATEGORIES + 1)
    ]
    csv_path = tmp_path / "paint.csv"
    csv_path.write_text("\n".join(["size,color,ticket,label", *rows]) + "\n")
    job = train(client, "paint", csv_path, target="label", estimator="logistic_regression")
    assert job["status"] == "succeeded", job

    # The API route says what the form offers, and the form offers exactly that.
    (version,) = client.get("/models/paint").json()["versions"]
    size, color, ticket = version["metadata"]["features"]
    assert color["categories"] == sorted(colors)
    assert "categories" not in size and "categories" not in ticket
    page = client.get("/ui/predict/paint").text
    assert '<input name="size" data-kind="numeric" type="number"' in page
    select = re.search(r'<select name="color" data-kind="categorical">(.*?)</select>', page, re.S)
    assert select is not None
    options = re.findall(r'<option value="([^"]*)">([^<]*)</option>', select.group(1))
    escaped = "&lt;script&gt;x&lt;/script&gt;"
    assert options == [(escaped, escaped), ("blue", "blue"), ("red", "red"), ("", "(missing)")]
    assert "<script>x" not in page
    assert '<input name="ticket" data-kind="categorical" type="text">' in page


@pytest.mark.usefixtures("iris_model")
def test_the_jobs_page_shows_a_batch_jobs_rows_done_then_links_its_file(
    client: TestClient, settings: Settings
) -> None:
    rows = (IRIS_DIR / "test.csv").read_bytes()
    finished = predict_as_job(client, "iris", rows)
    assert finished["status"] == "succeeded", finished
    # A job a live server process is running: its record says how far it got.
    jobs = settings.open_job_store()
    owner = "another-server-process"
    jobs.heartbeat(owner)  # alive, so nobody takes the job over meanwhile
    running = jobs.create("iris", PredictionJobOptions(version=1), "/upload.csv", owner)
    assert jobs.claim(running.id, owner) and jobs.set_rows_done(running.id, owner, 40)

    page = client.get("/ui/jobs").text
    assert 'data-refresh="3"' in page  # it reloads itself until the job is done
    row = re.search(rf'title="{running.id}".*?</tr>', page, re.S)
    assert row is not None and "40 rows done" in row.group(0)
    link = f'href="/jobs/{finished["id"]}/result" download'
    assert page.count(link) == 1
    answer = client.get(f"/jobs/{finished['id']}/result")
    assert answer.status_code == 200 and answer.text.startswith("sepal_length,")
    lines = answer.text.splitlines()
    assert len(lines) == len(rows.decode().splitlines())


def test_only_the_consoles_own_files_are_served(client: TestClient) -> None:
    assert client.get("/ui/static/console.js").headers["content-type"].startswith("text/javascript")
    for name in ("pages.py", "%2e%2e%2fpages.py", "console.js.map"):
        assert client.get(f"/ui/static/{name}").status_code == 404, name
