"""tests/waiting.py: waits end when their condition holds, or by the clock, never after a count of rounds."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.waiting import PATIENCE, eventually, until


def values(*answers):
    """A sync probe that gives ``answers`` one per call, and counts its calls."""
    given = iter(answers)

    def probe():
        probe.calls += 1
        return next(given)

    probe.calls = 0
    return probe


def test_the_budget_is_generous():
    assert PATIENCE == 60.0


async def test_eventually_returns_the_first_truthy_value():
    probe = values(0, None, "", "yes", "later")
    assert await eventually(probe, every=0.01) == "yes"
    assert probe.calls == 4


async def test_eventually_awaits_an_async_probe():
    answers = iter([False, [], {"status": "e-mailed"}])

    async def probe():
        await asyncio.sleep(0)
        return next(answers)

    assert await eventually(probe, every=0.01) == {"status": "e-mailed"}


async def test_eventually_awaits_what_a_sync_probe_returns_when_it_is_awaitable():
    async def status():
        return "posted"

    assert await eventually(lambda: status(), every=0.01) == "posted"


async def test_eventually_says_what_did_not_hold_after_its_timeout():
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"^the queue's deletion did not hold within 0\.3 s$"):
        await eventually(lambda: False, timeout=0.3, every=0.05, what="the queue's deletion")
    assert time.monotonic() - start >= 0.3


async def test_eventually_tells_what_it_saw_instead_when_asked():
    seen = []

    async def last_seen() -> str:
        return f"stayed at {seen[-1]}"

    def probe() -> bool:
        seen.append(len(seen))
        return False

    with pytest.raises(AssertionError, match=r"^the count did not hold within 0.2 s: stayed at \d+$"):
        await eventually(probe, timeout=0.2, every=0.05, what="the count", seen=last_seen)


async def test_eventually_checks_once_more_at_the_deadline():
    calls = []

    def probe():
        calls.append(time.monotonic())
        return len(calls) > 1  # true on the second call, which comes only at the deadline

    start = time.monotonic()
    assert await eventually(probe, timeout=0.2, every=10) is True
    assert calls[1] - start >= 0.19  # (a timer may fire a clock tick early)


async def test_eventually_waits_by_the_clock_when_the_probe_is_slow():
    calls = 0

    async def slow():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return False

    start = time.monotonic()
    with pytest.raises(AssertionError):
        await eventually(slow, timeout=0.5, every=0.1)
    assert time.monotonic() - start >= 0.5
    assert calls <= 4  # a count of rounds would have called it timeout / every = 5 times, over 1.5 s


def test_until_returns_the_first_truthy_value():
    probe = values(False, 0, 7, 8)
    assert until(probe, every=0.01) == 7
    assert probe.calls == 3


def test_until_says_what_did_not_hold_after_its_timeout():
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"^the print room's reading did not hold within 0\.3 s$"):
        until(lambda: None, timeout=0.3, every=0.05, what="the print room's reading")
    assert time.monotonic() - start >= 0.3


def test_until_waits_by_the_clock_when_the_probe_is_slow():
    calls = 0

    def slow():
        nonlocal calls
        calls += 1
        time.sleep(0.2)
        return False

    start = time.monotonic()
    with pytest.raises(AssertionError, match="the condition did not hold within 0.5 s"):
        until(slow, timeout=0.5, every=0.1)
    assert time.monotonic() - start >= 0.5
    assert calls <= 4
