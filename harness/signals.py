"""Scoped signal handling: the first SIGINT/SIGTERM becomes KeyboardInterrupt, so the code that
was running unwinds through its ``finally`` blocks and removes what it made; repeats while that
cleanup runs are reported and ignored. The previous handlers come back when the scope ends, so
library callers (the pytest plugin, a user's script) keep their own handling.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType


@contextlib.contextmanager
def _handling(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` within the block; the old handlers come back."""
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def interruptible(message: str = "drill: still cleaning up, please wait") -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises KeyboardInterrupt."""
    count = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count == 1:
            raise KeyboardInterrupt
        print(message, file=sys.stderr, flush=True)

    with _handling(handler):
        yield


@contextlib.contextmanager
def shielded(message: str) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are reported and ignored: for cleanup that the first
    signal already started. Handlers can be set only in the main thread; elsewhere, no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        print(message, file=sys.stderr, flush=True)

    with _handling(handler):
        yield
