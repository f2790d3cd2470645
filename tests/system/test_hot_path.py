"""The prediction hot path under real concurrency: batching gives each caller its own answer."""

from __future__ import annotations

import asyncio
import csv
from typing import Any

import aiohttp
import pandas as pd
import pytest

from ML.config import PROJECT_DIR
from ML.model_store import ModelStore
from ML.secret_key import load_or_create_secret
from testing.fastml_api import basic_auth
from testing.servers import ADMIN, Server

pytestmark = pytest.mark.system
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_rows() -> list[dict[str, float]]:
    with (PROJECT_DIR / "ML" / "data" / "full.csv").open() as file:
        return [{name: float(row[name]) for name in FEATURES} for row in csv.DictReader(file)]


async def fire(server: Server, bodies: list[tuple[str, Any]]) -> list[tuple[int, Any]]:
    """Send every body at once (one connection each, up to 64 in flight)."""
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, headers=basic_auth(ADMIN)) as session:

        async def one(url: str, body: Any) -> tuple[int, Any]:
            async with session.post(server.url + url, json=body) as answer:
                return answer.status, await answer.json()

        return await asyncio.wait_for(
            asyncio.gather(*(one(url, body) for url, body in bodies)), timeout=120
        )


def scikit_learn_answers(server: Server, rows: list[dict[str, float]]) -> tuple[list, Any]:
    store = ModelStore(server.model_dir, load_or_create_secret(None, server.model_dir / "_state"))
    pipeline = store.load_current("iris").pipeline
    frame = pd.DataFrame(rows, columns=FEATURES)
    return pipeline.predict(frame).tolist(), pipeline.predict_proba(frame)


def test_concurrent_callers_get_their_own_answers(iris_server: Server) -> None:
    server = iris_server
    rows = iris_rows()
    expected_labels, expected_proba = scikit_learn_answers(server, rows)
    bad = {"sepal_length": "wide", "sepal_width": 3.0, "petal_length": 1.0}
    bodies: list[tuple[str, Any]] = []
    for round_number in range(4):
        for index, row in enumerate(rows):
            url = "/models/iris/predict?proba=true" if index % 3 == 0 else "/models/iris/predict"
            bodies.append((url, {"rows": [row]}))
            if index % 25 == 0:
                bodies.append(("/models/iris/predict", {"rows": [row, bad]}))
        bodies.append(("/models/iris/predict", {"rows": rows[round_number::7]}))
    answers = asyncio.run(fire(server, bodies))

    classes = ["setosa", "versicolor", "virginica"]
    by_row = {tuple(row.values()): index for index, row in enumerate(rows)}
    checked = failed = 0
    for (url, body), (status, answer) in zip(bodies, answers, strict=True):
        if bad in body["rows"]:
            assert status == 422, answer
            fields = {detail["field"] for detail in answer["error"]["details"]}
            assert fields == {"sepal_length", "petal_width"}
            failed += 1
            continue
        assert status == 200, answer
        indexes = [by_row[tuple(row.values())] for row in body["rows"]]
        assert answer["predictions"] == [expected_labels[i] for i in indexes]
        if "proba=true" in url:
            for i, probabilities in zip(indexes, answer["probabilities"], strict=True):
                assert [probabilities[c] for c in classes] == expected_proba[i].tolist()
        checked += 1
    assert checked == len(bodies) - failed and failed > 0
