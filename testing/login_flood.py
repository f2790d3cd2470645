"""A flood of wrong passwords for the auth benchmark: every request a new user name, so the
throttle never stops it and each one costs the server a full hash verification.

    python -m testing.login_flood --url http://127.0.0.1:8000 --concurrency 32 --duration 30

Loopback targets only (it is an attack). Prints how many answers of each status came back.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import secrets
import time

import aiohttp

from testing.async_predictions import LoadTestError, check_loopback


async def flood(
    url: str, concurrency: int, duration: float, hashed: bool = True
) -> collections.Counter[str]:
    """Send wrong-password GET /models from `concurrency` loops until `duration` passes;
    with `hashed` false, malformed credentials the server refuses without hashing (a control
    run: the same connections and 401s, no hash work)."""
    statuses: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + duration
    timeout = aiohttp.ClientTimeout(total=60)
    # The server closes the connection after a 401, so no pooling: one connection each.
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
    ) as session:

        async def one_loop() -> None:
            while time.monotonic() < deadline:
                credentials = f"guess-{secrets.token_hex(6)}:{secrets.token_hex(8)}"
                token = base64.b64encode(credentials.encode()).decode() if hashed else "!"
                headers = {"Authorization": f"Basic {token}"}
                try:
                    async with session.get(f"{url}/models", headers=headers) as answer:
                        await answer.read()
                        statuses[str(answer.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as error:
                    statuses[type(error).__name__] += 1

        await asyncio.gather(*(one_loop() for _ in range(concurrency)))
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument(
        "--malformed",
        action="store_true",
        help="control run: malformed credentials, refused without hashing",
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(check_loopback(args.url))
    except LoadTestError as refused:
        parser.exit(2, f"login_flood: {refused}\n")
    started = time.monotonic()
    statuses = asyncio.run(
        flood(args.url.rstrip("/"), args.concurrency, args.duration, hashed=not args.malformed)
    )
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    print(
        f"{total} wrong-password requests in {elapsed:.1f} s ({total / elapsed:.1f}/s): "
        f"{dict(statuses)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
