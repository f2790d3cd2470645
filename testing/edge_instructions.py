"""Instructions per request through the app, without HTTP: a cost figure that the machine's
load does not move (callgrind counts instructions, not seconds).

    python testing/edge_instructions.py [--project-dir OLD_CHECKOUT] [--concurrency 32]
        [--workload predict|get_prediction] [--functions 25] [--seconds]
        [--loop uvloop|asyncio] [--keep PROFILE.out]

For each checkout (this one, and --project-dir if given, e.g. a `git archive` of an older
commit), it trains the workload's model through a real server, then runs itself under
`valgrind --tool=callgrind` in that checkout: the app's lifespan, then --requests requests
driven straight into the ASGI app, `--concurrency` at a time (so the batcher joins them, as
under load). Counting is on only around those requests (callgrind_control), so imports and
training are left out. Needs valgrind (`apt-get install valgrind`).

The workloads: `predict`, one JSON row to /models/iris/predict (testing/benchmark.py's);
`get_prediction`, the fast-ml client's multipart test.csv to /get_prediction
(testing/compat_benchmark.py's). `--functions N` also prints, per thread (the event loop's,
then the pool's), the N functions with the most instructions of their own, per request
(callgrind_annotate). `--seconds` runs the same requests without valgrind and prints the
wall and CPU microseconds per request instead: a figure the machine's load does move.

The requests run on uvloop, as the server's workers do (asyncio's own loop, which the figures
before session 6 ran on, spends ~23,000 instructions a request more in its Python-level
call_soon and handles: --loop asyncio). --keep copies the event-loop thread's profile for
`callgrind_annotate` (--project-dir's beside it, its name ending in -project-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
BODY = b'{"rows":[{"sepal_length":5.9,"sepal_width":3.0,"petal_length":5.1,"petal_width":1.8}]}'
USER, PASSWORD = "admin", "password"
WARMUP_REQUESTS = 64
PREDICT, GET_PREDICTION = "predict", "get_prediction"
# callgrind_annotate's "  16,208 (48.80%)  file:function [object]"
_ANNOTATED_LINE = re.compile(r"\s*([0-9,]+)\s+\(\s*[0-9.]+%\)\s+(.*)")


@dataclass(frozen=True)
class Workload:
    """One request shape: the model it needs and what it posts."""

    model: str
    train_form: dict[str, str]
    path: str
    content_type: bytes
    body: bytes


def workload(name: str) -> Workload:
    if name == PREDICT:
        return Workload("iris", {"n_estimators": "100"}, "/models/iris/predict",
                        b"application/json", BODY)  # fmt: skip
    sys.path.insert(0, str(PROJECT_DIR))
    from testing.compat_benchmark import COMPAT_MODEL, compat_request

    content_type, body = compat_request()
    return Workload(COMPAT_MODEL, {}, "/get_prediction", content_type.encode(), body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project-dir", type=Path, help="another checkout to count beside")
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workload", choices=[PREDICT, GET_PREDICTION], default=PREDICT)
    parser.add_argument("--functions", type=int, default=0, help="top functions per thread")
    parser.add_argument("--seconds", action="store_true", help="time, without valgrind")
    parser.add_argument("--cprofile", type=int, default=0, help="with --seconds: top functions")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the event loop: uvloop, as the server's workers run (uvicorn's loop='auto'), or "
        "asyncio's own (the figures recorded before session 6)",
    )
    parser.add_argument("--keep", type=Path, help="copy the event-loop thread's profile here")
    parser.add_argument("--drive", type=Path, help=argparse.SUPPRESS)  # the counted child
    args = parser.parse_args()
    if args.drive is not None:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(_drive(args.drive, args))
        else:
            asyncio.run(_drive(args.drive, args))
        return
    for index, project_dir in enumerate([PROJECT_DIR, *filter(None, [args.project_dir])]):
        keep = args.keep
        if keep is not None and index:  # the other checkout's profile beside, not over it
            keep = keep.with_name(f"{keep.stem}-project-dir{keep.suffix}")
        print(measure(project_dir.resolve(), args, keep))


def measure(project_dir: Path, args: argparse.Namespace, keep: Path | None = None) -> str:
    """What one checkout costs per request, as printed."""
    sys.path.insert(0, str(PROJECT_DIR))
    from testing.fastml_api import train
    from testing.servers import start_server, stop_server

    shape = workload(args.workload)
    with tempfile.TemporaryDirectory(prefix="fastml-instructions-") as work:
        work_dir = Path(work)
        server = start_server(work_dir, workers=1, project_dir=project_dir)
        try:
            with server.client() as client:
                csv_path = project_dir / "ML/data/train.csv"
                job = train(client, shape.model, csv_path, **shape.train_form)
                if job["status"] != "succeeded":
                    raise RuntimeError(f"training failed: {job}")
        finally:
            stop_server(server)
        child = [
            sys.executable, str(Path(__file__).resolve()), "--drive", str(work_dir),
            "--workload", args.workload,
            "--requests", str(args.requests), "--concurrency", str(args.concurrency),
            "--loop", args.loop,
        ]  # fmt: skip
        if args.seconds:
            child += ["--seconds", "--cprofile", str(args.cprofile)]
            done = subprocess.run(
                child, cwd=project_dir, check=True, capture_output=True, text=True
            )
            return f"{project_dir}: {done.stdout.strip()}"
        out = work_dir / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                   f"--callgrind-out-file={out}", *child]  # fmt: skip
        subprocess.run(command, cwd=project_dir, check=True, capture_output=True)
        threads = _thread_totals(work_dir)
        if keep is not None:  # callgrind names each thread's file OUT-NN; the event loop's is 01
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out.with_name(f"{out.name}-01"), keep)
        total = sum(threads.values())
        lines = [f"{project_dir}: {total / args.requests:,.0f} instructions per request"]
        # Thread 1 runs the event loop; the others are the thread pool's (and sqlite's).
        loop = [path for path in threads if path.name.endswith("-01")]
        pool = [path for path in threads if path not in loop]
        for label, paths in (("event-loop thread", loop), ("other threads", pool)):
            count = sum(threads[path] for path in paths)
            lines.append(f"  {label}: {count / args.requests:,.0f} per request")
            if args.functions:
                lines += _top_functions(paths, args.functions, args.requests)
        return "\n".join(lines)


def _thread_totals(work_dir: Path) -> dict[Path, int]:
    """The instructions each thread's callgrind file counted (one file per thread)."""
    totals = {}
    for path in sorted(work_dir.glob("callgrind.out*")):
        for line in path.read_text().splitlines():
            if line.startswith("totals:"):
                totals[path] = int(line.split()[1])
    if not totals:
        raise RuntimeError(f"callgrind wrote no totals in {work_dir}")
    return totals


def _top_functions(paths: list[Path], count: int, requests: int) -> list[str]:
    """The `count` functions with the most instructions of their own, per request, summed
    over `paths` (this callgrind_annotate reads one file at a time)."""
    own: dict[str, int] = {}
    for path in paths:
        done = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)],
                              check=True, capture_output=True, text=True)  # fmt: skip
        for line in done.stdout.splitlines():
            match = _ANNOTATED_LINE.match(line)
            if match and "PROGRAM TOTALS" not in line:
                own[match[2]] = own.get(match[2], 0) + int(match[1].replace(",", ""))
    top = sorted(own.items(), key=lambda row: -row[1])[:count]
    return [f"    {instructions / requests:>10,.0f}  {_short(name)}" for name, instructions in top]


def _short(name: str) -> str:
    """`dir/file.c:function [object]` as `file.c:function`."""
    return name.split(" [", 1)[0].rsplit("/", 1)[-1]


async def _drive(work_dir: Path, args: argparse.Namespace) -> None:
    """In the checkout being counted: the app, its lifespan, then the counted requests."""
    requests, concurrency = args.requests, args.concurrency
    os.environ.update(
        FASTML_MODEL_DIR=str(work_dir / "models"),
        FASTML_LOG_PATH=str(work_dir / "in_process.log"),
        SERVICE_USER=USER,
        SERVICE_PASS=PASSWORD,
    )
    shape = workload(args.workload)
    sys.path.insert(0, os.getcwd())
    from rest_api.app import create_app

    app = create_app()
    statuses: list[int] = []
    async with app.router.lifespan_context(app):
        await _requests(app, shape, WARMUP_REQUESTS, concurrency, statuses)
        if args.seconds:
            wall, cpu = time.perf_counter(), time.process_time()
            await _requests(app, shape, requests, concurrency, statuses)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"{wall / requests * 1e6:,.0f} µs wall, {cpu / requests * 1e6:,.0f} µs CPU "
                  "(all threads) per request")  # fmt: skip
            if args.cprofile:
                await _profiled(app, shape, args, statuses)
        else:
            _callgrind("--instr=on")
            await _requests(app, shape, requests, concurrency, statuses)
            _callgrind("--instr=off")
    if set(statuses) != {200}:
        raise SystemExit(f"not every request answered 200: {sorted(set(statuses))}")


async def _profiled(
    app: Any, shape: Workload, args: argparse.Namespace, statuses: list[int]
) -> None:
    """cProfile's top functions of the event-loop thread over the requests (it sees one
    thread); for get_prediction, then those of the pool thread's work, `evaluate_csv` called
    directly as Backend.evaluate calls it, as many times."""
    import cProfile
    import io

    profile = cProfile.Profile()
    profile.enable()
    await _requests(app, shape, args.requests, args.concurrency, statuses)
    profile.disable()
    print("event-loop thread:\n" + _stats(profile, args.cprofile))
    if args.workload != GET_PREDICTION:
        return
    from ML.evaluation import Scores, evaluate_csv

    sys.path.insert(0, str(PROJECT_DIR))
    from testing.benchmark_workload import TARGET, TEST_CSV

    backend = app.state.backend
    model = await backend.served_model(shape.model)
    limits = backend.settings.dataset_limits()
    csv = TEST_CSV.read_bytes()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.requests):
        evaluate_csv(model, io.BytesIO(csv), TARGET, limits, Scores.ACCURACY)
    profile.disable()
    print("pool thread (evaluate_csv):\n" + _stats(profile, args.cprofile))


def _stats(profile: Any, count: int) -> str:
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(count)
    return out.getvalue()


def _callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", switch, str(os.getpid())], check=True, capture_output=True)


async def _requests(
    app: Any, shape: Workload, count: int, concurrency: int, statuses: list[int]
) -> None:
    for _ in range(count // concurrency):
        await asyncio.gather(*(_request(app, shape, statuses) for _ in range(concurrency)))


# Built once: the driver's own work per request is not the server's, so it is kept small.
AUTHORIZATION = b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())


async def _request(app: Any, shape: Workload, statuses: list[int]) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": shape.path,
        "raw_path": shape.path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", AUTHORIZATION),
            (b"content-type", shape.content_type),
            (b"content-length", b"%d" % len(shape.body)),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": shape.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)


if __name__ == "__main__":
    main()
