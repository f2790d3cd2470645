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


def test_swagger_names_the_row_counts(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    job_result = schemas["JobView"]["properties"]["result"]
    training_example, prediction_example = job_result["examples"]
    assert {"train_rows", "test_rows"} <= set(training_example["metrics"])
    assert {"version", "rows", "expires_at"} == set(prediction_example)
    (evaluation,) = schemas["EvaluationView"]["properties"]["metrics"]["examples"]
    assert "test_rows" in evaluation and "train_rows" not in evaluation
    assert "dataset_rows" in schemas["VersionView"]["properties"]["metadata"]["description"]
