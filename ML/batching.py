"""Micro-batching: coalesces concurrent requests for one model into a single predict call."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True)
class BatchSettings:
    """How a `MicroBatcher` forms batches.

    `max_wait_seconds` is how long the oldest queued item may wait for company before its
    batch goes; 0 never waits, so batches form only from items that queue while a predict
    runs (or that arrive in the same event-loop tick as the first one).
    """

    max_rows: int = 512
    max_wait_seconds: float = 0.0
    run_in_thread: bool = True

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")
        if not (math.isfinite(self.max_wait_seconds) and self.max_wait_seconds >= 0):
            raise ValueError(
                f"max_wait_seconds must be a finite number >= 0, got {self.max_wait_seconds}"
            )


def _one_row(item: object) -> int:
    return 1


class _Pending(Generic[InputT, OutputT]):
    """One submitted item waiting in the queue (or in the batch that is running)."""

    __slots__ = ("arrived", "future", "item", "rows")

    def __init__(
        self, item: InputT, rows: int, future: asyncio.Future[OutputT], arrived: float
    ) -> None:
        self.item = item
        self.rows = rows
        self.future = future
        self.arrived = arrived


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[OutputT], error: BaseException) -> None:
    if not future.done():  # done already means its caller was cancelled and left
        future.set_exception(error)


class MicroBatcher(Generic[InputT, OutputT]):
    """Runs `predict_fn` on batches of submitted items, one call at a time.

    `predict_fn` takes a list of items and returns one output per item, in order; each
    `submit` caller gets its own output or its own exception. One task drains the queue
    while there is work and ends when the queue is empty, so an idle batcher holds no
    task, and a batcher built outside an event loop binds to none until used. Not
    thread-safe: use it from one event loop at a time.

    Counters, for tests and metrics: `batches` (batches taken from the queue),
    `items` (items put into them), `max_batch_items` (the largest such batch) and
    `failed_batches` (batches of several items that raised and were retried item by item).
    """

    def __init__(
        self,
        predict_fn: Callable[[list[InputT]], list[OutputT]],
        settings: BatchSettings,
        rows_of: Callable[[InputT], int] = _one_row,
    ) -> None:
        self._predict_fn = predict_fn
        self._settings = settings
        self._rows_of = rows_of
        self._max_rows = settings.max_rows
        self._max_wait = settings.max_wait_seconds
        self._queue: deque[_Pending[InputT, OutputT]] = deque()
        # Rows of queued items, cancelled ones included until the drainer pops them.
        self._queued_rows = 0
        self._drainer: asyncio.Task[None] | None = None
        # Set while the drainer waits for more items; resolving it ends the wait early.
        self._wakeup: asyncio.Future[None] | None = None
        self._is_closed = False
        self.batches = 0
        self.items = 0
        self.max_batch_items = 0
        self.failed_batches = 0

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    async def submit(self, item: InputT) -> OutputT:
        """The output of `predict_fn` for `item`, or the exception it raised for it alone."""
        if self._is_closed:
            raise RuntimeError(
                "the batcher is closed (its server is shutting down); send the request again"
            )
        loop = asyncio.get_running_loop()
        rows = self._rows_of(item)
        future: asyncio.Future[OutputT] = loop.create_future()
        arrived = loop.time() if self._max_wait else 0.0
        self._queue.append(_Pending(item, rows, future, arrived))
        self._queued_rows += rows
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        elif self._wakeup is not None and self._queued_rows >= self._max_rows:
            _wake(self._wakeup)
        return await future

    async def close(self) -> None:
        """Refuse new submits at once, then wait until every submitted item is answered."""
        self._is_closed = True
        if self._wakeup is not None:
            _wake(self._wakeup)  # nothing more can arrive, so waiting for company is pointless
        drainer = self._drainer
        if drainer is not None and not drainer.done():
            # wait() neither raises the drainer's outcome nor cancels it if close is cancelled.
            await asyncio.wait([drainer])

    async def _drain(self) -> None:
        batch: list[_Pending[InputT, OutputT]] = []
        try:
            while self._drop_cancelled_head():
                if self._max_wait:
                    await self._wait_for_company()
                batch = self._take_batch()
                if batch:
                    await self._run_batch(batch)
                    batch = []
                if not self._settings.run_in_thread:
                    await asyncio.sleep(0)  # an inline predict held the loop: let callers run
        except asyncio.CancelledError:
            self._abandon(batch, "the batcher's worker task was cancelled")
            raise
        except Exception:
            logger.exception("micro-batcher failed outside predict_fn")
            self._abandon(batch, "the batcher failed; see the server log")
        finally:
            self._drainer = None

    def _drop_cancelled_head(self) -> bool:
        """Pop items cancelled while queued from the front; True when work remains."""
        queue = self._queue
        while queue and queue[0].future.done():
            self._queued_rows -= queue.popleft().rows
        return bool(queue)

    async def _wait_for_company(self) -> None:
        """Let the oldest item wait up to max_wait_seconds from its arrival for more items."""
        if self._is_closed or self._queued_rows >= self._max_rows:
            return
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self._max_wait
        if deadline <= loop.time():
            return
        wakeup: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(deadline, _wake, wakeup)
        self._wakeup = wakeup
        try:
            await wakeup
        finally:
            timer.cancel()
            self._wakeup = None

    def _take_batch(self) -> list[_Pending[InputT, OutputT]]:
        """Queued items in order, up to max_rows rows; an item over max_rows goes alone."""
        queue = self._queue
        batch: list[_Pending[InputT, OutputT]] = []
        rows = 0
        while queue:
            pending = queue[0]
            if pending.future.done():  # its caller was cancelled while it queued
                self._queued_rows -= queue.popleft().rows
                continue
            if batch and rows + pending.rows > self._max_rows:
                break
            queue.popleft()
            self._queued_rows -= pending.rows
            batch.append(pending)
            rows += pending.rows
            if rows >= self._max_rows:
                break
        return batch

    async def _run_batch(self, batch: list[_Pending[InputT, OutputT]]) -> None:
        self.batches += 1
        self.items += len(batch)
        self.max_batch_items = max(self.max_batch_items, len(batch))
        try:
            outputs = await self._predict([pending.item for pending in batch])
        except Exception as error:
            if len(batch) == 1:
                _fail(batch[0].future, error)
                return
            self.failed_batches += 1
            await self._run_alone(batch)
            return
        for pending, output in zip(batch, outputs, strict=True):
            if not pending.future.done():  # skip callers cancelled while their batch ran
                pending.future.set_result(output)

    async def _run_alone(self, batch: list[_Pending[InputT, OutputT]]) -> None:
        """Retry each item of a failed batch by itself, so only the bad ones fail."""
        for pending in batch:
            if pending.future.done():
                continue
            try:
                outputs = await self._predict([pending.item])
            except Exception as error:
                _fail(pending.future, error)
                continue
            if not pending.future.done():
                pending.future.set_result(outputs[0])

    async def _predict(self, items: list[InputT]) -> list[OutputT]:
        if self._settings.run_in_thread:
            outputs = await asyncio.to_thread(self._predict_fn, items)
        else:
            outputs = self._predict_fn(items)
        if len(outputs) != len(items):
            raise ValueError(
                f"predict_fn returned {len(outputs)} outputs for {len(items)} items; "
                "it must return exactly one output per item, in the same order"
            )
        return outputs

    def _abandon(self, batch: list[_Pending[InputT, OutputT]], reason: str) -> None:
        """Fail the running batch and everything queued, so no caller waits forever."""
        for pending in [*batch, *self._queue]:
            _fail(pending.future, RuntimeError(f"{reason}; send the request again"))
        self._queue.clear()
        self._queued_rows = 0
