"""docs/architecture.md#reliability: a service killed at any point loses nothing, and after restart every convocation
reaches its end state exactly once."""

from __future__ import annotations

import asyncio
import signal

import pytest

pytestmark = pytest.mark.e2e


async def _all_emailed_once(chain, events, timeout: float = 60) -> None:
    addresses = [e["data"]["patient"]["email"] for e in events]
    for _ in range(int(timeout * 10)):
        if all(chain.emails_to(a) for a in addresses):
            break
        await asyncio.sleep(0.1)
    missing = [a for a in addresses if not chain.emails_to(a)]
    assert not missing, f"{len(missing)} of {len(addresses)} convocations never got their e-mail"
    await asyncio.sleep(1.0)  # let any duplicate surface
    counts = {a: len(chain.emails_to(a)) for a in addresses}
    assert set(counts.values()) == {1}, f"duplicate e-mails: { {a: n for a, n in counts.items() if n > 1} }"


async def test_a_mailer_that_is_down_loses_nothing_and_catches_up_when_back(chain):
    chain.stack.stop(["mailer"], sig=signal.SIGKILL)
    try:
        events = [chain.event() for _ in range(15)]
        for event in events:
            await chain.publish(event)
        await asyncio.sleep(1.0)
        assert not any(chain.emails_to(e["data"]["patient"]["email"]) for e in events)
    finally:
        chain.stack.start(["mailer"])
    await _all_emailed_once(chain, events)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "terminated"])
async def test_an_issuer_stopped_in_the_middle_of_a_burst_seals_every_convocation_exactly_once(chain, sig):
    events = [chain.event() for _ in range(30)]
    for event in events:
        await chain.publish(event)
    await asyncio.sleep(0.3)  # part of the burst is in flight
    chain.stack.stop(["issuer"], sig=sig)
    chain.stack.start(["issuer"])
    await _all_emailed_once(chain, events)
    for event in events:
        await chain.wait_status(event["data"]["convocation_id"], "e-mailed")
