"""How a test waits for something to happen: by the clock, never by a count of rounds.

A wait has a deadline taken from ``time.monotonic()`` and a generous budget, ``PATIENCE`` (60 s): under
``make test``'s full load (every tier side by side on two cores) the chain takes several times what it
takes alone, and a loop of 100 rounds of 0.1 s lasts longer than 10 s whenever its probe is slow. A
passing wait returns as soon as its condition holds, so the budget costs nothing; only a failing test
spends it. A wait that asserts something must *not* take long passes its own short ``timeout``.

``eventually`` is for async tests (its probe may be sync or async), ``until`` for blocking code."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

PATIENCE = 60.0


async def eventually(
    probe: Callable[[], Any],
    timeout: float = PATIENCE,
    every: float = 0.1,
    what: str = "the condition",
    seen: Callable[[], Any] | None = None,
) -> Any:
    """``probe()``'s first truthy value (awaited when it returns an awaitable), polled every ``every`` s
    until ``timeout`` s have passed, and once more then; AssertionError naming ``what`` if none came, followed
    by ``seen()`` (awaited likewise): what the test saw instead."""
    deadline = time.monotonic() + timeout
    while True:
        last = time.monotonic() >= deadline
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if last:
            detail = seen() if seen is not None else None
            if inspect.isawaitable(detail):
                detail = await detail
            raise AssertionError(f"{what} did not hold within {timeout:g} s" + (f": {detail}" if seen else ""))
        await asyncio.sleep(max(0.0, min(every, deadline - time.monotonic())))


def until(probe: Callable[[], Any], timeout: float = PATIENCE, every: float = 0.1, what: str = "the condition") -> Any:
    """``eventually`` for blocking code: ``probe()``'s first truthy value, or AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        last = time.monotonic() >= deadline
        if value := probe():
            return value
        if last:
            raise AssertionError(f"{what} did not hold within {timeout:g} s")
        time.sleep(max(0.0, min(every, deadline - time.monotonic())))
