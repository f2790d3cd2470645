"""A real headless browser: Debian's chromium driven by Playwright (no downloaded browser)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from testing.servers import Server
from tests.iris import serving_iris

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Headless, and quiet: no component updates, sync or other background traffic of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


# Package scope: Playwright's sync API keeps an event loop running in this thread while it
# lives, which would break asyncio.run() in the tests that come after this package.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        reason = "no chromium on PATH; scripts/test installs it (apt-get) when run as root"
        if os.environ.get("FASTML_REQUIRE_BROWSER") == "1":  # set in CI: fail, never skip
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def iris_server(tmp_path_factory: pytest.TempPathFactory, users_file: Path) -> Iterator[Server]:
    """Real gunicorn (two workers) knowing the test users, with iris version 1 trained."""
    yield from serving_iris(
        tmp_path_factory.mktemp("browser-server"), {"FASTML_USERS_FILE": str(users_file)}
    )
