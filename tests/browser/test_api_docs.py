"""Swagger UI and ReDoc in a real browser, against real gunicorn, with no internet to lean on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route

from testing.servers import ADMIN, Server

pytestmark = [pytest.mark.system, pytest.mark.browser]
PAGE_TIMEOUT_MS = 30_000
# Not requests that left: the browser refused them because the page's CSP forbids them
# (Chromium's error, and the word Playwright reports it as once it routes requests).
BLOCKED_BY_PAGE_POLICY = ("net::ERR_BLOCKED_BY_CSP", "csp")


class RequestRecorder:
    """Every request the pages make; anything not for 127.0.0.1 is aborted (no internet)."""

    def __init__(self, context: BrowserContext) -> None:
        self.urls: list[str] = []
        self.blocked_by_policy: list[str] = []
        context.on("request", lambda request: self.urls.append(request.url))
        context.on("requestfailed", self._on_failed)
        context.route("**/*", self._only_loopback)

    def _on_failed(self, request: Request) -> None:
        if request.failure in BLOCKED_BY_PAGE_POLICY:
            self.blocked_by_policy.append(request.url)

    @staticmethod
    def _only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort("internetdisconnected")

    def sent_elsewhere(self) -> list[str]:
        sent = [url for url in self.urls if url not in self.blocked_by_policy]
        return [url for url in sent if urlsplit(url).hostname != "127.0.0.1"]


@pytest.fixture
def page(browser: Browser, iris_server: Server) -> Iterator[tuple[Page, RequestRecorder]]:
    context = browser.new_context(
        http_credentials={"username": ADMIN[0], "password": ADMIN[1]},
        base_url=iris_server.url,
    )
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    recorder = RequestRecorder(context)
    try:
        yield context.new_page(), recorder
    finally:
        context.close()


def test_swagger_lists_the_operations_and_try_it_out_predicts(
    page: tuple[Page, RequestRecorder],
) -> None:
    tab, recorder = page
    tab.goto("/docs")
    tab.locator(".opblock").first.wait_for()
    paths = set(tab.locator(".opblock-summary-path").all_inner_texts())
    assert {"/models/{name}/train", "/models/{name}/predict", "/jobs/{job_id}"} <= paths

    predict = tab.locator(".opblock-post").filter(
        has=tab.locator(".opblock-summary-path[data-path='/models/{name}/predict']")
    )
    predict.locator(".opblock-summary").click()
    predict.locator(".try-out__btn").click()
    predict.locator("input[placeholder='name']").fill("iris")
    predict.locator(".execute").click()  # with the example body Swagger fills in
    answer = predict.locator(".live-responses-table tbody .response").first
    answer.wait_for()
    assert answer.locator(".response-col_status").inner_text().strip() == "200"
    body = json.loads(answer.locator("pre.microlight").first.inner_text())
    assert body == {"model": "iris", "version": 1, "predictions": ["setosa"]}

    assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in recorder.urls)
    assert recorder.sent_elsewhere() == []


def test_redoc_renders_the_operations(page: tuple[Page, RequestRecorder]) -> None:
    tab, recorder = page
    tab.goto("/redoc")
    tab.locator("h2", has_text="Predict labels for JSON rows (or columns)").wait_for()
    tab.locator("h2", has_text="Train a new version from a CSV").wait_for()
    assert any(url.endswith("/docs/assets/redoc.standalone.js") for url in recorder.urls)
    assert recorder.sent_elsewhere() == []


def test_docs_pages_and_assets_ask_for_credentials(iris_server: Server) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
        answer = httpx.get(f"{iris_server.url}{path}", timeout=10)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"].startswith("Basic"), path
