"""One load test across several client processes, so that one Python process is not the limit.

Each process runs `run_load` on its share of the requests and of the concurrency (and of the
rate, in open-loop mode), in bounded memory; they start together behind a barrier and send
back their reports, which are merged into one: counts add up, and the fixed-size latency
histograms are merged bucket by bucket, so the percentiles are exactly those of one histogram
holding every sample.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import multiprocessing
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.synchronize import Barrier, Event
from types import FrameType
from typing import Any

from testing.async_predictions import loop_factory, run_load
from testing.load_config import LoadConfig, LoadTestError
from testing.load_report import LoadReport

START_DEADLINE_SECONDS = 120.0
POLL_SECONDS = 0.2


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` integers that differ by at most one, largest first."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def child_configs(config: LoadConfig, processes: int) -> list[LoadConfig]:
    """Each process's share of the run; raises LoadTestError when it cannot be split."""
    if processes < 1:
        raise LoadTestError(f"--processes must be at least 1; got {processes}")
    if processes > min(config.requests, config.concurrency):
        raise LoadTestError(
            f"--processes {processes} is more than --concurrency {config.concurrency} or the "
            f"{config.requests} requests; each process needs at least one of each"
        )
    rate = None if config.rate is None else config.rate / processes
    return [
        dataclasses.replace(
            config, requests=requests, concurrency=concurrency, rate=rate, show_progress=False
        )
        for requests, concurrency in zip(
            shares(config.requests, processes), shares(config.concurrency, processes), strict=True
        )
    ]


def _child(
    index: int,
    config: LoadConfig,
    barrier: Barrier,
    stop: Event,
    done: ctypes.Array[ctypes.c_longlong],
    results: multiprocessing.Queue[tuple[str, Any]],
) -> None:
    def progress(count: int) -> None:
        done[index] = count

    async def watched() -> LoadReport:
        stopping = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(POLL_SECONDS)
            stopping.set()

        watcher = asyncio.create_task(watch())
        try:
            return await run_load(config, stop=stopping, on_progress=progress)
        finally:
            watcher.cancel()

    try:
        try:
            barrier.wait(timeout=START_DEADLINE_SECONDS)
        except threading.BrokenBarrierError:
            raise LoadTestError("interrupted before every client process had started") from None
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            results.put(("report", runner.run(watched())))
    except LoadTestError as exc:
        results.put(("error", str(exc)))


def run_in_processes(config: LoadConfig, processes: int) -> LoadReport:
    """Run `config` split over `processes` client processes; one merged report.

    A first Ctrl-C stops every process from sending (in-flight requests finish) and the
    merged report is still made; raises LoadTestError when a process cannot run.
    """
    configs = child_configs(config, processes)
    context = multiprocessing.get_context("spawn")  # no event loop or thread is forked
    barrier = context.Barrier(processes + 1)
    stop = context.Event()
    done = context.Array("q", processes, lock=False)
    results: multiprocessing.Queue[tuple[str, Any]] = context.Queue()
    children = [
        context.Process(
            target=_child, args=(index, child, barrier, stop, done, results), daemon=True
        )
        for index, child in enumerate(configs)
    ]
    # Ctrl-C reaches the whole process group; the children are born ignoring it (an ignored
    # signal stays ignored across exec), so only this process decides, and sets `stop`.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for child in children:
            child.start()
    finally:
        # The first Ctrl-C only sets `stop`, in a handler: a KeyboardInterrupt raised inside
        # results.get could leave a report half read from its pipe, and the next read
        # waiting forever (seen once in CI). A second Ctrl-C aborts.
        signal.signal(signal.SIGINT, _stop_on_first_interrupt(stop))
    try:
        barrier.wait(timeout=START_DEADLINE_SECONDS)
        reports = _collect(children, results, done, config)
    finally:
        signal.signal(signal.SIGINT, previous)
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    return LoadReport.merged(reports)


def _stop_on_first_interrupt(stop: Event) -> Callable[[int, FrameType | None], None]:
    def interrupted(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print(
            "\ninterrupted: waiting for requests in flight (Ctrl-C again to abort)", file=sys.stderr
        )
        stop.set()  # the children stop sending, finish what is in flight, and report

    return interrupted


def _collect(
    children: Sequence[multiprocessing.process.BaseProcess],
    results: multiprocessing.Queue[tuple[str, Any]],
    done: ctypes.Array[ctypes.c_longlong],
    config: LoadConfig,
) -> list[LoadReport]:
    """Every child's report, showing their summed progress; stops waiting for dead children."""
    reports: list[LoadReport] = []
    errors: list[str] = []
    bar = _progress_bar(config)
    try:
        while len(reports) + len(errors) < len(children):
            is_any_alive = any(child.is_alive() for child in children)
            try:
                kind, value = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not is_any_alive:  # all gone, and what they sent before exiting is read
                    errors.append("a client process died without a report; see its error above")
                    break
            else:
                (reports if kind == "report" else errors).append(value)
            if bar is not None:
                bar.update(sum(done[:]) - bar.n)
    finally:
        if bar is not None:
            bar.close()
    if errors:
        raise LoadTestError("; ".join(sorted(set(errors))))
    return reports


def _progress_bar(config: LoadConfig) -> Any:
    if not config.show_progress:
        return None
    from tqdm import tqdm

    return tqdm(total=config.requests, unit="req", smoothing=0.1, dynamic_ncols=True)
