"""300 slow connections do not stop a normal client (issue 7, point 4).

Slow clients dribble a header line every second and never finish, as slowloris does; each is
cut at the default 10 s header deadline and comes back. A normal client predicts meanwhile.
Run with `-s` to see the figures recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ML.config import PROJECT_DIR
from testing.fastml_api import train
from testing.servers import Server
from tests.system.http_wire import address

pytestmark = pytest.mark.system

SLOW_CLIENTS = 300
ATTACK_SECONDS = 15.0  # longer than the 10 s header deadline: every slow client is cut once
ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}


async def slow_client(url: str, stop: threading.Event, outcomes: Counter[str]) -> None:
    host, port = address(url)
    for _ in range(100):  # reconnects; each round lasts until the server cuts it
        if stop.is_set():
            return
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            outcomes["connect error"] += 1
            await asyncio.sleep(0.5)
            continue
        outcomes["connections"] += 1
        writer.write(b"GET /models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(1000):
            if stop.is_set():
                break
            try:
                answer = await asyncio.wait_for(reader.read(4096), timeout=1.0)
            except TimeoutError:
                writer.write(b"X-Slow: still-coming\r\n")
                continue
            except OSError:
                answer = b""
            outcomes["cut with 408" if answer.startswith(b"HTTP/1.1 408") else "cut"] += 1
            break
        writer.close()


def run_slow_clients(url: str, stop: threading.Event, outcomes: Counter[str]) -> None:
    async def attack() -> None:
        await asyncio.gather(*(slow_client(url, stop, outcomes) for _ in range(SLOW_CLIENTS)))

    asyncio.run(attack())


def normal_client(server: Server, seconds: float) -> tuple[Counter[str], list[float]]:
    results: Counter[str] = Counter()
    latencies = []
    deadline = time.monotonic() + seconds
    with server.client() as client:
        for _ in range(100_000):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                answer = client.post("/models/iris/predict", json={"rows": [ROW]})
                results[str(answer.status_code)] += 1
            except httpx.HTTPError as exc:
                results[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - start)
    return results, latencies


def summary(results: Counter[str], latencies: list[float]) -> str:
    ok = results["200"] / max(1, sum(results.values()))
    cuts = statistics.quantiles(latencies, n=100)
    return (
        f"{sum(results.values())} requests, {ok:.2%} answered 200 ({dict(results)}), "
        f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )


def test_300_slow_connections_do_not_stop_a_normal_client(server: Server, tmp_path: Path) -> None:
    with server.client() as client:
        train(client, "iris", PROJECT_DIR / "ML" / "data" / "train.csv")
    quiet = normal_client(server, 5.0)

    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    attackers = threading.Thread(target=run_slow_clients, args=(server.url, stop, outcomes))
    attackers.start()
    try:
        time.sleep(2.0)  # let the slow connections pile up
        loaded = normal_client(server, ATTACK_SECONDS)
    finally:
        stop.set()
        attackers.join(timeout=30)
    assert not attackers.is_alive()

    print(f"\nalone: {summary(*quiet)}")
    print(f"with {SLOW_CLIENTS} slow connections: {summary(*loaded)}")
    print(f"slow connections: {dict(outcomes)}")
    results, _ = loaded
    assert set(results) == {"200"}, results
    assert results["200"] >= 100, results
    # The header deadline cut slow connections (and they all got in: none was refused).
    assert outcomes["connections"] >= SLOW_CLIENTS
    assert outcomes["cut with 408"] >= SLOW_CLIENTS // 2, outcomes
    assert outcomes["connect error"] == 0, outcomes
