"""Signal handlers set for the length of a block: what a Celery job does around its work."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

Handler = Callable[[int, Any], Any]


@contextmanager
def handlers_during(handlers: Mapping[int, Handler]) -> Iterator[None]:
    """Within the block, `handlers` handle their signals; the previous ones are back after it.

    Outside the main thread (a pool of threads) nothing is set: handlers run in the main
    thread only, and only it may change them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
