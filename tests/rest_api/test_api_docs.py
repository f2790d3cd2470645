"""The docs pages name only this server's assets (the browser test renders them)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from rest_api.api_docs import CONTENT_SECURITY_POLICY


def test_docs_pages_load_only_local_assets_under_a_policy(client: TestClient) -> None:
    for path, assets in [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"]),
        ("/redoc", ["redoc.standalone.js", "favicon.png"]),
    ]:
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert re.findall(r"https?://", page.text) == [], path  # no CDN, no fonts
        for asset in assets:
            assert f'"/docs/assets/{asset}"' in page.text, (path, asset)
            served = client.get(f"/docs/assets/{asset}")
            assert served.status_code == 200 and len(served.content) > 1000, asset
