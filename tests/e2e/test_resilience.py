"""docs/architecture.md#reliability: a service killed at any point loses nothing, and after restart every convocation
reaches its end state exactly once."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e


async def _all_emailed_once(chain, events, timeout: float = PATIENCE) -> None:
    addresses = [e["data"]["patient"]["email"] for e in events]
    await eventually(
        lambda: all(chain.emails_to(a) for a in addresses),
        timeout,
        what="every e-mail",
        seen=lambda: f"{sum(not chain.emails_to(a) for a in addresses)} of {len(addresses)} never got theirs",
    )
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


async def _hold_a_request(port: int) -> asyncio.StreamWriter:
    """An HTTP request in flight that the client never finishes: half of its declared body sent."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
    await writer.drain()
    return writer


async def test_sigterm_under_load_ends_every_service_within_its_budget_and_loses_nothing(chain):
    """Issue 18, item 7: a service could take up to 60 s to stop against its pod's 45 s of grace (requests 25 s,
    then handlers 20 s, then the relay 10 s, then the pool, one after the other). Each of the five is stopped
    under load with work that will not finish by itself (an e-mail relay that never answers, a request body
    that never ends): each exits by itself within SHUTDOWN_TIMEOUT_SECONDS, and every letter goes out once."""
    stack = chain.stack
    budget = float(stack.extra_env["*"]["SHUTDOWN_TIMEOUT_SECONDS"])
    hung_relay = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)  # accepts, never answers
    mailer_env = dict(stack.extra_env["mailer"])
    stack.stop(["mailer"])
    stack.extra_env["mailer"]["SMTP_PORT"] = str(hung_relay.sockets[0].getsockname()[1])
    held = []
    try:
        stack.start(["mailer"])
        events = [chain.event() for _ in range(20)]
        for event in events:
            await chain.publish(event)

        # Wait for the mailer to hold letters in its stuck handlers, and hold a request on every service.
        async def all_stored() -> bool:
            return await chain.db.fetchval(
                "select count(*) from access_portal.message where convocation_id = any($1::uuid[])",
                [e["data"]["convocation_id"] for e in events],
            ) == len(events)

        await eventually(all_stored, what="the portal's copies of the letters")
        held = [await _hold_a_request(stack.ports[name]) for name in stack.processes]
        processes = dict(stack.processes)
        started = time.monotonic()
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        took: dict[str, float] = {}
        while len(took) < len(processes) and time.monotonic() - started < budget + 10:
            for name, process in processes.items():
                if name not in took and process.poll() is not None:
                    took[name] = time.monotonic() - started
            await asyncio.sleep(0.05)
        assert set(took) == set(processes), f"still running after {budget + 10} s: {set(processes) - set(took)}"
        late = {name: round(t, 1) for name, t in took.items() if t > budget}
        assert not late, f"over the {budget} s budget: {late}"
        # Each ended through its own shutdown (uvicorn re-raises the SIGTERM it handled), not through the cut
        # at the end of the budget (exit status 1).
        assert {name: p.returncode for name, p in processes.items()} == dict.fromkeys(processes, -signal.SIGTERM)
        stack.processes.clear()
    finally:
        for writer in held:
            writer.close()
        hung_relay.close()
        stack.stop()
        stack.extra_env["mailer"] = mailer_env
        stack.start()
    await _all_emailed_once(chain, events)
