"""MicroBatcher: own answers per caller, batches within limits, failures kept to their caller."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Collection, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import pytest

from ML.batching import BatchSettings, MicroBatcher

DEADLINE_SECONDS = 30.0
T = TypeVar("T")


class BadItem(Exception):
    """What the test predict_fn raises when a call holds an item marked as bad."""


def answer(item: Any) -> str:
    return f"out-{item}"


class Recorder:
    """A predict_fn that records each call, fails calls holding bad items, and can hold calls.

    Built inside the running loop; as a context manager it releases held calls on exit, so
    a failing test never leaves an executor thread blocked.
    """

    def __init__(
        self, *, hold: bool = False, bad: Collection[Any] = (), sleep_seconds: float = 0.0
    ) -> None:
        self.calls: list[list[Any]] = []
        self.raised: list[BadItem] = []
        self.thread_ids: set[int] = set()
        self._bad = set(bad)
        self._sleep_seconds = sleep_seconds
        self._released = threading.Event()
        if not hold:
            self._released.set()
        self._loop = asyncio.get_running_loop()
        self._started: asyncio.Queue[list[Any]] = asyncio.Queue()

    def __call__(self, items: list[Any]) -> list[str]:
        self.calls.append(list(items))
        self.thread_ids.add(threading.get_ident())
        self._loop.call_soon_threadsafe(self._started.put_nowait, list(items))
        if not self._released.wait(DEADLINE_SECONDS):
            raise TimeoutError("the test never released the held predict call")
        if self._sleep_seconds:
            time.sleep(self._sleep_seconds)
        bad = [item for item in items if item in self._bad]
        if bad:
            error = BadItem(f"bad items {bad}")
            self.raised.append(error)
            raise error
        return [answer(item) for item in items]

    async def next_call(self) -> list[Any]:
        """The items of the next predict call to start (waiting for it, with a deadline)."""
        return await asyncio.wait_for(self._started.get(), DEADLINE_SECONDS)

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on a fresh loop with a deadline; fail on anything the loop reports.

    The loop reports, for instance, a future whose exception was never retrieved; that goes
    to its exception handler, not to `warnings`, so filterwarnings=error would not see it.
    """
    reports: list[dict[str, Any]] = []

    async def guarded() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reports.append(context))
        try:
            return await asyncio.wait_for(main, DEADLINE_SECONDS)
        finally:
            gc.collect()

    result = asyncio.run(guarded())
    gc.collect()
    assert reports == []
    return result


async def queue_up(count: int = 1) -> None:
    """Let tasks created so far run up to their first await (each submit queues its item)."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_concurrent_callers_each_get_their_own_answer() -> None:
    async def scenario() -> None:
        predict = Recorder(sleep_seconds=0.002)
        batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings(max_rows=64))

        async def caller(item: int) -> str:
            await queue_up(item % 7)  # stagger arrivals so some land while a predict runs
            return await batcher.submit(item)

        results = await asyncio.gather(*(caller(item) for item in range(200)))

        assert results == [answer(item) for item in range(200)]
        assert sorted(item for call in predict.calls for item in call) == list(range(200))
        assert all(len(call) <= 64 for call in predict.calls)
        assert batcher.items == 200
        assert batcher.batches == len(predict.calls) < 200
        assert batcher.max_batch_items == max(len(call) for call in predict.calls) > 1

    run(scenario())


def test_lone_request_starts_at_once_and_later_ones_batch_behind_it() -> None:
    async def scenario() -> None:
        with Recorder(hold=True) as predict:
            batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings())
            first = asyncio.create_task(batcher.submit(0))
            assert await predict.next_call() == [0]  # started with nothing else submitted
            assert (batcher.batches, batcher.items) == (1, 1)

            others = [asyncio.create_task(batcher.submit(item)) for item in range(1, 200)]
            await queue_up()
            assert predict.calls == [[0]]  # one predict in flight: the others queue
            predict.release()

            assert await first == answer(0)
            assert await asyncio.gather(*others) == [answer(item) for item in range(1, 200)]
        assert predict.calls == [[0], list(range(1, 200))]
        assert (batcher.batches, batcher.items, batcher.max_batch_items) == (2, 200, 199)

    run(scenario())


def test_max_rows_caps_every_batch_in_order() -> None:
    async def scenario() -> None:
        with Recorder(hold=True) as predict:
            batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings(max_rows=8))
            tasks = [asyncio.create_task(batcher.submit(0))]
            await predict.next_call()
            tasks += [asyncio.create_task(batcher.submit(item)) for item in range(1, 21)]
            await queue_up()
            predict.release()
            results = await asyncio.gather(*tasks)

        assert results == [answer(item) for item in range(21)]
        assert predict.calls == [[0], list(range(1, 9)), list(range(9, 17)), list(range(17, 21))]

    run(scenario())


def test_rows_of_counts_rows_and_an_item_over_max_rows_runs_alone() -> None:
    async def scenario() -> None:
        with Recorder(hold=True) as predict:
            batcher: MicroBatcher[tuple[int, ...], str] = MicroBatcher(
                predict, BatchSettings(max_rows=5), rows_of=len
            )
            items = [(0,), (1, 1), (2, 2), (3,) * 7, (4, 4), (5,), (6,), (7,) * 5]
            tasks = [asyncio.create_task(batcher.submit(items[0]))]
            await predict.next_call()
            tasks += [asyncio.create_task(batcher.submit(item)) for item in items[1:]]
            await queue_up()
            predict.release()
            results = await asyncio.gather(*tasks)

        assert results == [answer(item) for item in items]
        assert predict.calls == [
            [(0,)],
            [(1, 1), (2, 2)],  # a third two-row item would make 6 rows
            [(3,) * 7],  # over max_rows: alone
            [(4, 4), (5,), (6,)],
            [(7,) * 5],
        ]

    run(scenario())


def test_a_failing_item_fails_only_its_own_request() -> None:
    async def scenario() -> None:
        with Recorder(hold=True, bad={3}) as predict:
            batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings())
            tasks = [asyncio.create_task(batcher.submit(0))]
            await predict.next_call()
            tasks += [asyncio.create_task(batcher.submit(item)) for item in range(1, 6)]
            await queue_up()
            predict.release()
            results = await asyncio.gather(*tasks, return_exceptions=True)

        assert results[:3] == [answer(0), answer(1), answer(2)]
        assert results[4:] == [answer(4), answer(5)]
        assert isinstance(results[3], BadItem)
        assert results[3] is predict.raised[-1]  # the object predict_fn raised for [3] alone
        assert predict.calls == [[0], [1, 2, 3, 4, 5], [1], [2], [3], [4], [5]]
        assert (batcher.batches, batcher.items, batcher.failed_batches) == (2, 6, 1)

    run(scenario())


def test_a_lone_failing_item_gets_the_original_exception_without_a_retry() -> None:
    async def scenario() -> None:
        predict = Recorder(bad={7})
        batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings())
        with pytest.raises(BadItem) as caught:
            await batcher.submit(7)
        assert caught.value is predict.raised[0]
        assert predict.calls == [[7]]
        assert batcher.failed_batches == 0
        assert await batcher.submit(8) == answer(8)  # the batcher still serves

    run(scenario())


def test_wrong_number_of_outputs_is_an_error_for_the_caller() -> None:
    async def scenario() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [], BatchSettings())
        with pytest.raises(ValueError, match="returned 0 outputs for 1 items"):
            await batcher.submit(1)

    run(scenario())


def test_a_caller_cancelled_while_queued_is_not_computed() -> None:
    async def scenario() -> None:
        with Recorder(hold=True) as predict:
            batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings())
            first = asyncio.create_task(batcher.submit(0))
            await predict.next_call()
            queued = {item: asyncio.create_task(batcher.submit(item)) for item in (1, 2, 3, 4)}
            await queue_up()
            queued[2].cancel()
            queued[1].cancel()  # the head of the queue
            await queue_up()
            predict.release()
            assert await first == answer(0)
            assert await queued[3] == answer(3)
            assert await queued[4] == answer(4)
        assert queued[1].cancelled()
        assert queued[2].cancelled()
        assert predict.calls == [[0], [3, 4]]
        assert batcher.items == 3

    run(scenario())


def test_a_caller_cancelled_while_its_batch_runs_leaves_the_others_their_results() -> None:
    async def scenario() -> None:
        with Recorder(hold=True) as predict:
            batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings())
            tasks = [asyncio.create_task(batcher.submit(item)) for item in (0, 1, 2)]
            assert await predict.next_call() == [0, 1, 2]
            tasks[1].cancel()
            await asyncio.wait([tasks[1]], timeout=DEADLINE_SECONDS)
            predict.release()
            assert await tasks[0] == answer(0)
            assert await tasks[2] == answer(2)
        assert tasks[1].cancelled()
        assert predict.calls == [[0, 1, 2]]

    run(scenario())


def test_a_failing_caller_cancelled_while_its_batch_runs_leaks_nothing() -> None:
    async def scenario() -> None:
        with Recorder(hold=True, bad={7}) as predict:
            batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings())
            task = asyncio.create_task(batcher.submit(7))
            await predict.next_call()
            task.cancel()
            await asyncio.wait([task], timeout=DEADLINE_SECONDS)
            predict.release()
            await batcher.close()  # the exception arrives after its caller left
        assert task.cancelled()
        assert len(predict.raised) == 1

    run(scenario())


def test_a_caller_cancelled_as_its_exception_arrives_leaks_nothing() -> None:
    async def scenario() -> None:
        callers: list[asyncio.Task[int]] = []

        def predict(items: list[int]) -> list[int]:
            # Runs on the loop: this cancel is queued before the caller's wake-up, so the
            # caller is cancelled after its future already holds the exception.
            asyncio.get_running_loop().call_soon(callers[0].cancel)
            raise BadItem("always")

        batcher: MicroBatcher[int, int] = MicroBatcher(predict, BatchSettings(run_in_thread=False))
        callers.append(asyncio.create_task(batcher.submit(1)))
        await asyncio.wait(callers, timeout=DEADLINE_SECONDS)
        assert callers[0].cancelled()

    run(scenario())


def test_close_finishes_pending_work_then_refuses_new_items() -> None:
    async def scenario() -> None:
        with Recorder(hold=True) as predict:
            batcher: MicroBatcher[int, str] = MicroBatcher(predict, BatchSettings())
            tasks = [asyncio.create_task(batcher.submit(0))]
            await predict.next_call()
            tasks += [asyncio.create_task(batcher.submit(item)) for item in (1, 2)]
            await queue_up()
            closing = asyncio.create_task(batcher.close())
            await queue_up()
            assert batcher.is_closed
            assert not closing.done()  # the held predict and the queued items are not done
            with pytest.raises(RuntimeError, match="closed"):
                await batcher.submit(3)
            predict.release()
            await asyncio.wait_for(closing, DEADLINE_SECONDS)
            assert all(task.done() for task in tasks)
            assert [task.result() for task in tasks] == [answer(0), answer(1), answer(2)]
        await batcher.close()  # closing twice is harmless
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit(4)
        assert predict.calls == [[0], [1, 2]]

    run(scenario())


def test_close_of_an_unused_batcher_returns_at_once() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items, BatchSettings())
    run(batcher.close())
    assert batcher.is_closed
    assert batcher.batches == 0


def test_wait_gathers_items_that_arrive_within_the_window_until_max_rows() -> None:
    async def scenario() -> None:
        predict = Recorder()
        settings = BatchSettings(max_rows=5, max_wait_seconds=DEADLINE_SECONDS * 10)
        batcher: MicroBatcher[int, str] = MicroBatcher(predict, settings)
        tasks = []
        for item in range(4):
            tasks.append(asyncio.create_task(batcher.submit(item)))
            await queue_up(10)  # items arrive on separate loop turns, inside the window
        assert predict.calls == []  # the first item is still waiting for company
        tasks.append(asyncio.create_task(batcher.submit(4)))  # fifth row: goes at once
        results = await asyncio.gather(*tasks)

        assert results == [answer(item) for item in range(5)]
        assert predict.calls == [[0, 1, 2, 3, 4]]

    run(scenario())


def test_wait_ends_when_the_window_closes() -> None:
    async def scenario() -> None:
        predict = Recorder()
        batcher: MicroBatcher[int, str] = MicroBatcher(
            predict, BatchSettings(max_rows=100, max_wait_seconds=0.01)
        )
        assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [
            answer(1),
            answer(2),
        ]
        assert predict.calls == [[1, 2]]

    run(scenario())


def test_close_cuts_the_wait_short() -> None:
    async def scenario() -> None:
        predict = Recorder()
        batcher: MicroBatcher[int, str] = MicroBatcher(
            predict, BatchSettings(max_wait_seconds=DEADLINE_SECONDS * 10)
        )
        task = asyncio.create_task(batcher.submit(1))
        await queue_up(10)
        assert predict.calls == []
        await batcher.close()
        assert task.result() == answer(1)

    run(scenario())


def test_inline_predict_runs_on_the_loop_thread() -> None:
    async def scenario() -> None:
        predict = Recorder(bad={13})
        batcher: MicroBatcher[int, str] = MicroBatcher(
            predict, BatchSettings(max_rows=16, run_in_thread=False)
        )
        results = await asyncio.gather(
            *(batcher.submit(item) for item in range(40)), return_exceptions=True
        )

        assert results[:13] == [answer(item) for item in range(13)]
        assert isinstance(results[13], BadItem)
        assert results[14:] == [answer(item) for item in range(14, 40)]
        assert predict.thread_ids == {threading.get_ident()}
        assert predict.calls == [
            list(range(16)),
            *([item] for item in range(16)),  # 13 failed the first batch: each alone
            list(range(16, 32)),
            list(range(32, 40)),
        ]
        assert batcher.batches == 3
        assert batcher.max_batch_items == 16

    run(scenario())


def test_built_outside_a_loop_and_usable_from_successive_loops() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(
        lambda items: [-i for i in items], BatchSettings()
    )
    assert run(batcher.submit(1)) == -1
    assert run(batcher.submit(2)) == -2
    assert batcher.batches == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_rows": 0}, "max_rows must be at least 1"),
        ({"max_wait_seconds": -0.1}, "max_wait_seconds must be a finite number"),
        ({"max_wait_seconds": float("nan")}, "max_wait_seconds must be a finite number"),
    ],
)
def test_settings_refuse_impossible_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchSettings(**changes)
