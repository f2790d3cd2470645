"""Instructions per single-row predict request through the app, without HTTP: a cost figure
that the machine's load does not move (callgrind counts instructions, not seconds).

    python testing/edge_instructions.py [--project-dir OLD_CHECKOUT] [--concurrency 32]
        [--main-thread] [--loop uvloop|asyncio] [--keep PROFILE.out]

For each checkout (this one, and --project-dir if given, e.g. a `git archive` of an older
commit), it trains iris through a real server, then runs itself under
`valgrind --tool=callgrind` in that checkout: the app's lifespan, then --requests predict
requests driven straight into the ASGI app, `--concurrency` at a time (so the batcher joins
them, as under load). Counting is on only around those requests (callgrind_control), so
imports and training are left out. Needs valgrind (`apt-get install valgrind`).

The requests run on uvloop, as the server's workers do (asyncio's own loop, which the figures
before session 6 ran on, spends ~23,000 instructions a request more in its Python-level
call_soon and handles: --loop asyncio). --main-thread counts the event-loop thread alone;
--keep keeps the profile for `callgrind_annotate`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
BODY = b'{"rows":[{"sepal_length":5.9,"sepal_width":3.0,"petal_length":5.1,"petal_width":1.8}]}'
USER, PASSWORD = "admin", "password"
WARMUP_REQUESTS = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project-dir", type=Path, help="another checkout to count beside")
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--main-thread",
        action="store_true",
        help="count the event-loop thread alone (callgrind --separate-threads=yes): steadier, "
        "as the model-poll and result-expiry threads run on wall-clock timers",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy callgrind's output here (for callgrind_annotate); --project-dir's beside, "
        "its name ending in -project-dir",
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the event loop: uvloop, as the server's workers run (uvicorn's loop='auto'), or "
        "asyncio's own (the figures recorded before session 6)",
    )
    parser.add_argument("--drive", type=Path, help=argparse.SUPPRESS)  # the counted child
    args = parser.parse_args()
    if args.drive is not None:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(_drive(args.drive, args.requests, args.concurrency))
        else:
            asyncio.run(_drive(args.drive, args.requests, args.concurrency))
        return
    for index, project_dir in enumerate([PROJECT_DIR, *filter(None, [args.project_dir])]):
        keep = args.keep
        if keep is not None and index:  # the other checkout's profile beside, not over it
            keep = keep.with_name(f"{keep.stem}-project-dir{keep.suffix}")
        count = instructions_per_request(
            project_dir.resolve(),
            args.requests,
            args.concurrency,
            main_thread=args.main_thread,
            keep=keep,
            loop=args.loop,
        )
        print(f"{project_dir}: {count:,.0f} instructions per request")


def instructions_per_request(
    project_dir: Path,
    requests: int,
    concurrency: int,
    *,
    main_thread: bool = False,
    keep: Path | None = None,
    loop: str = "uvloop",
) -> float:
    sys.path.insert(0, str(PROJECT_DIR))
    from testing.fastml_api import train
    from testing.servers import start_server, stop_server

    with tempfile.TemporaryDirectory(prefix="fastml-instructions-") as work:
        work_dir = Path(work)
        server = start_server(work_dir, workers=1, project_dir=project_dir)
        try:
            with server.client() as client:
                train(client, "iris", project_dir / "ML/data/train.csv", n_estimators="100")
        finally:
            stop_server(server)
        out = work_dir / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            *(["--separate-threads=yes"] if main_thread else []),
            sys.executable, str(Path(__file__).resolve()), "--drive", str(work_dir),
            "--requests", str(requests), "--concurrency", str(concurrency), "--loop", loop,
        ]  # fmt: skip
        subprocess.run(command, cwd=project_dir, check=True, capture_output=True)
        if main_thread:  # callgrind names each thread's file OUT-NN; the event loop's is 01
            out = out.with_name(f"{out.name}-01")
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out, keep)
        for line in out.read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1]) / requests
    raise RuntimeError(f"callgrind wrote no totals to {out}")


async def _drive(work_dir: Path, requests: int, concurrency: int) -> None:
    """In the checkout being counted: the app, its lifespan, then the counted requests."""
    os.environ.update(
        FASTML_MODEL_DIR=str(work_dir / "models"),
        FASTML_LOG_PATH=str(work_dir / "in_process.log"),
        SERVICE_USER=USER,
        SERVICE_PASS=PASSWORD,
    )
    sys.path.insert(0, os.getcwd())
    from rest_api.app import create_app

    app = create_app()
    statuses: list[int] = []
    async with app.router.lifespan_context(app):
        await _requests(app, WARMUP_REQUESTS, concurrency, statuses)
        _callgrind("--instr=on")
        await _requests(app, requests, concurrency, statuses)
        _callgrind("--instr=off")
    if set(statuses) != {200}:
        raise SystemExit(f"not every request answered 200: {sorted(set(statuses))}")


def _callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", switch, str(os.getpid())], check=True, capture_output=True)


async def _requests(app: Any, count: int, concurrency: int, statuses: list[int]) -> None:
    for _ in range(count // concurrency):
        await asyncio.gather(*(_predict(app, statuses) for _ in range(concurrency)))


# Built once: the driver's own work per request is not the server's, so it is kept small.
AUTHORIZATION = b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())


async def _predict(app: Any, statuses: list[int]) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/models/iris/predict",
        "raw_path": b"/models/iris/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", AUTHORIZATION),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(BODY)),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)


if __name__ == "__main__":
    main()
