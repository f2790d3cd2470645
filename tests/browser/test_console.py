"""The web console at /ui in a real browser, against real gunicorn (two workers).

A trainer trains iris, follows the job, reads the confusion matrix, rolls back, predicts
from the form (a category picked from the list the model recorded), downloads a CSV of
predictions and a batch-prediction job's file; a predictor sees only predicting; a CSV
header such as `<script>` stays text; another site's page cannot make the browser train.
Screenshots of every page go to a temporary folder (the test's artifacts), and also to
$FASTML_CONSOLE_SCREENSHOTS when it is set: docs/console/*.png are those, reduced to 64
colours with Pillow (`Image.quantize(64)`, saved with optimize=True) to keep the repo small.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Dialog,
    Download,
    FilePayload,
    Page,
    ViewportSize,
    expect,
)

from testing.fastml_api import train
from testing.servers import Server
from tests.iris import ROW
from tests.users import PREDICTOR, TRAINER

pytestmark = [pytest.mark.system, pytest.mark.browser]
PAGE_TIMEOUT_MS = 30_000
JOB_TIMEOUT_MS = 120_000
VIEWPORT = ViewportSize(width=1100, height=760)
# Another site, served by the browser itself (Playwright fulfils its requests). Its page
# submits a form: Chromium lets a fetch from a public page to loopback fail on its own
# (Local Network Access), but not a navigation, so the form is what reaches our guard.
ATTACKER = "http://attacker.test"
# A header and labels an attacker would like to see run as HTML.
SCRIPT_COLUMN = "<script>window.pwned=1</script>"
IMG_LABEL = "<img src=x onerror=window.pwned=2>"
BOLD_LABEL = "<b>bold</b>"
SCRIPT_CATEGORY = "<script>window.pwned=3</script>"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


def save_screenshot(tab: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    tab.screenshot(path=path, full_page=True)
    published = os.environ.get("FASTML_CONSOLE_SCREENSHOTS")
    if published:
        shutil.copy(path, Path(published) / path.name)


def read_download(download: Download) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))


def new_context(browser: Browser, server: Server, user: tuple[str, str]) -> BrowserContext:
    context = browser.new_context(
        http_credentials={"username": user[0], "password": user[1]},
        base_url=server.url,
        viewport=VIEWPORT,
        accept_downloads=True,
    )
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    return context


@pytest.fixture
def trainer_tab(browser: Browser, iris_server: Server) -> Iterator[Page]:
    context = new_context(browser, iris_server, TRAINER)
    try:
        yield context.new_page()
    finally:
        context.close()


def accept_dialogs(tab: Page) -> list[str]:
    messages: list[str] = []

    def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    tab.on("dialog", accept)
    return messages


def train_in_browser(tab: Page, name: str, csv_file: Path | FilePayload) -> None:
    """Fill the train page with the file (its last column is the target) and submit."""
    tab.goto("/ui/train")
    form = tab.locator("#train-form")
    form.locator("input[name=csv_file]").set_input_files(csv_file)
    expect(form.locator("select[name=target_variable]")).to_be_enabled()
    form.locator("input[name=name]").fill(name)


def test_train_follow_the_job_see_the_matrix_and_roll_back(
    trainer_tab: Page, iris_server: Server, screenshots: Path, iris_train_csv: Path
) -> None:
    tab = trainer_tab
    train_in_browser(tab, "iris", iris_train_csv)
    form = tab.locator("#train-form")
    header = iris_train_csv.read_text().splitlines()[0].split(",")
    assert form.locator("select[name=target_variable] option").all_inner_texts() == header
    expect(form.locator("select[name=target_variable]")).to_have_value("species")
    form.locator("select[name=estimator]").select_option("logistic_regression")
    params = form.locator("fieldset[data-estimator=logistic_regression]")
    expect(params).to_be_visible()
    params.locator("input[data-param=C]").fill("0.5")
    form.locator("input[name=evaluation][value=cv]").check()
    form.locator("input[name=cv]").fill("3")
    form.locator("button[type=submit]").click()

    expect(tab.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    expect(tab.locator("#new-version")).to_have_text("iris v2")
    save_screenshot(tab, screenshots, "train")

    tab.locator("#new-version").click()
    tab.wait_for_url("**/ui/models/iris#version-2")
    heatmap = tab.locator("#version-2 svg.heatmap")
    expect(heatmap).to_be_visible()
    assert heatmap.locator("rect").count() == 9  # three classes
    expect(tab.locator("#version-2 table.classes tbody tr")).to_have_count(3)
    expect(tab.locator("#versions thead th.current")).to_contain_text("v2")
    expect(tab.locator("#versions")).to_contain_text("3-fold CV")
    expect(tab.locator("#versions")).to_contain_text("C=0.5")
    save_screenshot(tab, screenshots, "model")

    questions = accept_dialogs(tab)
    tab.locator("button.promote", has_text="Roll back to v1").click()
    expect(tab.locator("#versions thead th.current")).to_contain_text("v1")
    assert len(questions) == 1 and "Roll back to v1 of iris" in questions[0]
    with iris_server.client() as client:
        assert client.get("/models/iris").json()["current_version"] == 1
    # And forward again, with the same button on the other version.
    tab.locator("button.promote", has_text="Promote v2").click()
    expect(tab.locator("#versions thead th.current")).to_contain_text("v2")


def test_models_and_jobs_pages(trainer_tab: Page, iris_server: Server, screenshots: Path) -> None:
    tab = trainer_tab
    tab.goto("/ui")
    tab.wait_for_url("**/ui/models")
    with iris_server.client() as client:
        (iris,) = [
            model for model in client.get("/models").json()["models"] if model["name"] == "iris"
        ]
    cells = tab.locator("#models tbody tr", has_text="iris").locator("td")
    expect(cells.nth(1)).to_have_text(f"v{iris['current_version']}")
    expect(cells.nth(3)).to_have_text(iris["estimator"])
    expect(cells.nth(4)).to_have_text(f"{iris['metrics']['accuracy']:.3f}")
    save_screenshot(tab, screenshots, "models")

    tab.goto("/ui/jobs")
    expect(tab.locator("#jobs tbody tr").first).to_contain_text("succeeded")


def test_predict_from_the_form_and_download_a_csv(
    trainer_tab: Page, screenshots: Path, iris_test_csv: Path
) -> None:
    tab = trainer_tab
    tab.goto("/ui/predict")
    tab.locator("a", has_text="iris").click()
    form = tab.locator("#predict-form")
    for name, value in {
        "sepal_length": "5.1",
        "sepal_width": "3.5",
        "petal_length": "1.4",
        "petal_width": "0.2",
    }.items():
        form.locator(f"input[name={name}]").fill(value)
    form.locator("button[type=submit]").click()
    expect(tab.locator("#predicted-label")).to_have_text("setosa")
    expect(tab.locator("#probabilities tbody tr")).to_have_count(3)
    expect(tab.locator("#probabilities tbody tr").first).to_contain_text("setosa")

    csv_form = tab.locator("#predict-csv-form")
    csv_form.locator("input[name=csv_file]").set_input_files(iris_test_csv)
    with tab.expect_download() as started:
        csv_form.locator("button[type=submit]").click()
    download = started.value
    assert download.suggested_filename == "iris-predictions.csv"
    rows = read_download(download)
    assert len(rows) == len(iris_test_csv.read_text().splitlines()) - 1
    assert {"prediction", "probability_setosa"} <= set(rows[0])
    assert all(row["prediction"] in {"setosa", "versicolor", "virginica"} for row in rows)
    expect(tab.locator("#predict-csv-status")).to_contain_text("downloaded iris-predictions.csv")


def paint_csv() -> bytes:
    """The label follows the color (a category), not the size; one color is written as HTML."""
    labels = {"red": "warm", "blue": "cool", SCRIPT_CATEGORY: "odd"}
    lines = ["size,color,label"]
    for index in range(36):
        color = list(labels)[index % 3]
        lines.append(f'{index % 5 + 0.5},"{color}",{labels[color]}')
    return ("\n".join(lines) + "\n").encode()


def test_predict_with_a_category_picked_from_the_list(
    trainer_tab: Page, iris_server: Server, screenshots: Path, tmp_path: Path
) -> None:
    csv_path = tmp_path / "paint.csv"
    csv_path.write_bytes(paint_csv())
    with iris_server.client() as client:
        job = train(client, "paint", csv_path, target="label", estimator="logistic_regression")
    assert job["status"] == "succeeded", job
    tab = trainer_tab
    dialogs = accept_dialogs(tab)
    tab.goto("/ui/predict/paint")
    form = tab.locator("#predict-form")
    expect(form.locator("input[name=size][type=number]")).to_be_visible()
    color = form.locator("select[name=color]")
    # The categories recorded at training, as text, then the choice of leaving it missing.
    assert color.locator("option").all_inner_texts() == [
        SCRIPT_CATEGORY,
        "blue",
        "red",
        "(missing)",
    ]
    form.locator("input[name=size]").fill("2.5")
    for category, label in (("red", "warm"), (SCRIPT_CATEGORY, "odd")):
        color.select_option(category)
        form.locator("button[type=submit]").click()
        expect(tab.locator("#predicted-label")).to_have_text(label)
        expect(tab.locator("#probabilities tbody tr")).to_have_count(3)
        expect(tab.locator("#probabilities tbody tr").first).to_contain_text(label)
    color.select_option("red")
    form.locator("button[type=submit]").click()
    expect(tab.locator("#predicted-label")).to_have_text("warm")
    save_screenshot(tab, screenshots, "predict")
    assert tab.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []


def test_a_batch_job_from_the_predict_page_links_its_file_there_and_on_the_jobs_page(
    trainer_tab: Page, screenshots: Path, iris_test_csv: Path
) -> None:
    tab = trainer_tab
    rows_sent = len(iris_test_csv.read_text().splitlines()) - 1
    tab.goto("/ui/predict/iris")
    csv_form = tab.locator("#predict-csv-form")
    csv_form.locator("input[name=csv_file]").set_input_files(iris_test_csv)
    tab.locator("#predict-csv-job").click()
    status = tab.locator("#predict-csv-status")
    expect(status).to_contain_text(f"done, {rows_sent} rows", timeout=JOB_TIMEOUT_MS)
    with tab.expect_download() as started:
        status.locator("a.download").click()
    job_id = started.value.suggested_filename.removeprefix("iris-").removesuffix(".csv")
    assert len(read_download(started.value)) == rows_sent

    tab.goto("/ui/jobs")
    row = tab.locator("#jobs tbody tr", has=tab.locator(f"code[title='{job_id}']"))
    expect(row).to_contain_text("predict")
    expect(row).to_contain_text(f"{rows_sent} rows, v")
    save_screenshot(tab, screenshots, "jobs")
    with tab.expect_download() as started:
        row.locator("a.download").click()
    assert started.value.suggested_filename == f"iris-{job_id}.csv"
    rows = read_download(started.value)
    assert len(rows) == rows_sent
    assert {"species", "prediction", "probability_setosa"} <= set(rows[0])


MAX_LOAD_REQUESTS = 5000


def predict_until(server: Server, stop: threading.Event) -> None:
    """Predictions, one after another, until `stop` is set (or the cap): load to watch."""
    with server.client() as client:
        for _ in range(MAX_LOAD_REQUESTS):
            if stop.is_set():
                return
            client.post("/models/iris/predict", json={"rows": [ROW]})
            client.get("/models/missing")  # a 404 for the error rate


def test_server_page_shows_rate_latency_and_errors(
    trainer_tab: Page, iris_server: Server, screenshots: Path
) -> None:
    tab = trainer_tab
    stop = threading.Event()
    load = threading.Thread(target=predict_until, args=(iris_server, stop), daemon=True)
    load.start()
    try:
        tab.goto("/ui/server")
        expect(tab.locator("#routes")).to_contain_text("/models/{name}/predict")
        # From the second scrape on (3 s apart): rates and percentiles of the interval.
        expect(tab.locator("#p50")).to_contain_text("ms", timeout=20_000)
        expect(tab.locator("#rate")).not_to_have_text(re.compile(r"^(…|0\.0)$"), timeout=20_000)
        expect(tab.locator("#errors-4xx")).not_to_have_text(re.compile(r"^(…|0\.0)$"))
        save_screenshot(tab, screenshots, "server")
    finally:
        stop.set()
        load.join(timeout=30)


def test_a_predictor_sees_only_predicting(
    browser: Browser, iris_server: Server, screenshots: Path
) -> None:
    context = new_context(browser, iris_server, PREDICTOR)
    try:
        tab = context.new_page()
        tab.goto("/ui")
        tab.wait_for_url("**/ui/predict")
        assert tab.locator("header nav a").all_inner_texts() == ["Predict", "Server", "API docs"]
        tab.locator("a", has_text="iris").click()
        tab.locator("#predict-form input[name=sepal_length]").wait_for()
        for page in ("/ui/models", "/ui/models/iris", "/ui/train", "/ui/jobs"):
            answer = tab.goto(page)
            assert answer is not None and answer.status == 403, page
        answer = tab.goto("/ui/predict/iris")
        assert answer is not None and answer.status == 200
        assert tab.locator("button.promote").count() == 0
    finally:
        context.close()


def nasty_csv() -> bytes:
    """Two classes told apart by the first column; names and labels written as HTML."""
    lines = [f'"{SCRIPT_COLUMN}",width,"{IMG_LABEL.replace(chr(34), chr(34) * 2)}"']
    for index in range(30):
        label = BOLD_LABEL if index % 2 else IMG_LABEL
        lines.append(f"{index % 2 * 10 + index / 10},{index},{label}")
    return ("\n".join(lines) + "\n").encode()


def test_a_csv_header_like_script_stays_text(trainer_tab: Page) -> None:
    tab = trainer_tab
    dialogs = accept_dialogs(tab)
    upload = FilePayload(name="nasty.csv", mimeType="text/csv", buffer=nasty_csv())
    train_in_browser(tab, "nasty", upload)
    options = tab.locator("#train-form select[name=target_variable] option")
    assert options.all_inner_texts() == [SCRIPT_COLUMN, "width", IMG_LABEL]
    tab.locator("#train-form button[type=submit]").click()
    expect(tab.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)

    tab.goto("/ui/models/nasty")
    classes = tab.locator("#version-1 table.classes tbody")
    expect(classes).to_contain_text(BOLD_LABEL)
    expect(classes).to_contain_text(IMG_LABEL)
    expect(tab.locator("#version-1 svg.heatmap")).to_be_visible()
    tab.goto("/ui/predict/nasty")
    expect(tab.locator("#predict-form")).to_contain_text(SCRIPT_COLUMN)
    tab.locator("#predict-form input[data-kind=numeric]").first.fill("10.5")
    tab.locator("#predict-form input[name=width]").fill("3")
    tab.locator("#predict-form button[type=submit]").click()
    expect(tab.locator("#predicted-label")).to_have_text(BOLD_LABEL)
    tab.goto("/ui/models")
    assert tab.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []


def forging_page(target: str) -> str:
    """Another site's page that makes the browser post a training upload to `target` as
    soon as it opens: the classic cross-site request forgery, a form with a file in it."""
    return f"""<!doctype html><form method="post" enctype="multipart/form-data" action="{target}">
<input type="file" name="csv_file"><input name="target_variable" value="b"></form>
<script>
const file = new File(["a,b\\n1,x\\n2,y\\n"], "a.csv", {{type: "text/csv"}});
const files = new DataTransfer();
files.items.add(file);
document.forms[0].csv_file.files = files.files;
document.forms[0].submit();
</script>"""


def test_another_sites_page_cannot_make_the_browser_train(
    trainer_tab: Page, iris_server: Server
) -> None:
    tab = trainer_tab
    tab.goto("/ui/models")  # logged in: the browser now holds the credentials
    target = f"{iris_server.url}/models/forged/train"
    page = forging_page(target)
    tab.context.route(
        f"{ATTACKER}/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=page),
    )
    with tab.expect_response(target) as answered:
        tab.goto(f"{ATTACKER}/")
    assert answered.value.status == 403
    assert "cross-site request forgery" in answered.value.json()["error"]["message"]
    with iris_server.client() as client:
        assert client.get("/jobs", params={"model": "forged"}).json()["jobs"] == []
        # The same upload from a client that is not a browser is fine: only its origin was wrong.
        files = {"csv_file": ("a.csv", b"a,b\n1,x\n2,y\n")}
        accepted = client.post("/models/forged/train", files=files, data={"target_variable": "b"})
        assert accepted.status_code == 202, accepted.text


def test_console_pages_ask_for_credentials(iris_server: Server) -> None:
    for path in ("/ui", "/ui/models", "/ui/predict", "/ui/static/console.js"):
        answer = httpx.get(f"{iris_server.url}{path}", timeout=10)
        assert answer.status_code == 401, path
