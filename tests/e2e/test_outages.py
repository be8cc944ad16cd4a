"""Outages longer than a blip lose nothing.

- A TCP proxy between the issuer and PostgreSQL is cut for longer than the delivery limit lasts; the
  issuer holds its messages instead of burning that limit, and every letter goes out once the database
  is back, none dead-lettered.
- A TCP proxy between the services and RabbitMQ is cut while letters flow: the services say they are
  not ready, committed events wait in the outboxes, and once the broker is reachable again every letter
  goes out exactly once, none dead-lettered, within 10 s of the return.

Each test's stack has a database of its own: the session stack's relays would publish its outbox rows.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from urllib.parse import urlsplit

import aio_pika
import pytest

from devstack.sample import publish
from devstack.stack import http
from tests.conftest import AMQP_URL, DB_PORT, inbox_stack
from tests.e2e.conftest import random_email
from tests.e2e.proxy import TcpProxy
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
EXCHANGE = "test-outage"  # its own queues, apart from the session's stack
CUT_SECONDS = 40  # the old requeue loop burnt the 10 deliveries of the limit in about 21 s
BROKER_EXCHANGE = "test-broker-outage"
# Longer than everything that could give up or count a delivery while the broker is away: the relay's
# publish timeout (10 s, twice over), the robust connection's reconnect interval (1 s, several attempts
# refused), the readiness refresh (15 s), and long enough that a backoff of the events that failed to
# publish (the relay once pushed them back up to 60 s: 1, 2, 4, 8, 16 s...) would outlast the promise
# below. Detection itself is immediate (the proxy resets the connections), so AMQP heartbeats play no
# part; a broker consumer timeout (30 min) cannot be reached here. A 5-minute outage works the same way.
BROKER_CUT_SECONDS = 30
# Every held letter goes out within this long of the broker's or the database's return (issue 18, item 10).
RESUME_SECONDS = 10


async def _depth(channel, queue: str) -> int:
    return (await channel.declare_queue(queue, passive=True)).declaration_result.message_count


async def test_postgres_cut_longer_than_the_delivery_limit_loses_no_letter(chain, own_database, devinbox, tmp_path):
    test_database, _ = own_database
    with TcpProxy(DB_PORT) as proxy:
        stack = inbox_stack(
            devinbox,
            database=test_database,
            exchange=EXCHANGE,
            log_dir=tmp_path,
            amqp_url=AMQP_URL,
            extra_env={
                "*": {"MAILER_RETRY_DELAYS": "1,2,3", "LOG_LEVEL": "INFO"},  # the production backoff
                "issuer": {"DATABASE_URL": f"postgresql://issuer:issuer@127.0.0.1:{proxy.port}/{test_database}"},
            },
        )
        try:
            stack.start(["issuer", "mailer"])
            proxy.cut()
            events = [chain.event(email=random_email()) for _ in range(10)]
            for event in events:
                await publish(AMQP_URL, EXCHANGE, event)
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                channel = await connection.channel()
                await asyncio.sleep(CUT_SECONDS)
                dlq = f"{EXCHANGE}.issuer.convocation.created.v1.dlq"
                assert await _depth(channel, dlq) == 0, "the outage burnt the delivery limit"
                held = stack.log_file("issuer").read_text()
                assert "database unreachable; holding the event until it is back" in held
                proxy.restore()
                back = datetime.now(timezone.utc)
                for event in events:
                    await chain.email_to(event["data"]["patient"]["email"])
                assert await _depth(channel, dlq) == 0
            _resumed_promptly(chain, events, back)
            for event in events:
                assert len(chain.emails_to(event["data"]["patient"]["email"])) == 1
        finally:
            stack.stop()


async def test_broker_cut_while_letters_flow_sends_each_letter_once(chain, own_database, devinbox, tmp_path):
    test_database, db = own_database
    with TcpProxy(urlsplit(AMQP_URL).port or 5672) as proxy:
        stack = inbox_stack(
            devinbox,
            database=test_database,
            exchange=BROKER_EXCHANGE,
            log_dir=tmp_path,
            amqp_url=proxied(AMQP_URL, proxy.port),
            extra_env={"*": {"MAILER_RETRY_DELAYS": "1,2,3", "LOG_LEVEL": "INFO"}},
        )
        try:
            # The portal too: the issuer's relay publishes the letter to it (message.sealed) as well as
            # its link to the mailer (email.requested), mandatory, and waits until each has a queue.
            stack.start(["issuer", "mailer", "access-portal"])
            before = [chain.event(email=random_email()) for _ in range(20)]
            during = [chain.event(email=random_email()) for _ in range(10)]
            for event in before:  # the hospital's side of the broker stays up all along
                await publish(AMQP_URL, BROKER_EXCHANGE, event)
            await chain.email_to(before[0]["data"]["patient"]["email"])
            proxy.cut()  # letters are in flight: taken, being sealed or mailed, in the outboxes
            for event in during:
                await publish(AMQP_URL, BROKER_EXCHANGE, event)
            await asyncio.sleep(BROKER_CUT_SECONDS / 2)
            for name in ("issuer", "mailer"):
                answer = http("GET", f"{stack.url(name)}/readyz", timeout=10)
                assert answer.status_code == 503 and answer.json()["broker"] is False, (name, answer.text)
            await asyncio.sleep(BROKER_CUT_SECONDS / 2)
            proxy.restore()
            back = datetime.now(timezone.utc)
            for event in before + during:
                await chain.email_to(event["data"]["patient"]["email"], timeout=90)
            _resumed_promptly(chain, before + during, back)
            for name in ("issuer", "mailer", "access-portal"):
                stack.wait_ready(name, 30)
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                channel = await connection.channel()
                queues = [
                    f"{BROKER_EXCHANGE}.issuer.convocation.created.v1",
                    f"{BROKER_EXCHANGE}.mailer.email.requested.v1",
                    f"{BROKER_EXCHANGE}.access-portal.message.sealed.v2",
                    f"{BROKER_EXCHANGE}.issuer.email.sent.v1",
                ]
                await _drained(channel, queues)
                for queue in queues:
                    assert await _depth(channel, f"{queue}.dlq") == 0, f"{queue}: a good event was dead-lettered"
            for schema in ("issuer", "mailer"):
                await _outbox_empty(db, schema)
        finally:
            stack.stop()
        for event in before + during:
            assert len(chain.emails_to(event["data"]["patient"]["email"])) == 1, "a letter went out twice"


def _resumed_promptly(chain, events: list[dict], back: datetime) -> None:
    """Each letter was e-mailed before the outage ended or within RESUME_SECONDS of its end."""
    late = {}
    for event in events:
        (mail,) = chain.emails_to(event["data"]["patient"]["email"])
        after = (datetime.fromisoformat(mail["received_at"]) - back).total_seconds()
        if after > RESUME_SECONDS:
            late[event["data"]["convocation_id"]] = round(after, 1)
    assert not late, f"letters e-mailed more than {RESUME_SECONDS} s after the outage ended: {late}"


def proxied(amqp_url: str, port: int) -> str:
    """The same broker URL through the proxy's port."""
    head, _, tail = amqp_url.rpartition("@")
    host_port, _, vhost = tail.partition("/")
    return f"{head}@{host_port.rsplit(':', 1)[0]}:{port}/{vhost}"


async def _drained(channel, queues: list[str], timeout: float = PATIENCE) -> None:
    """Every queue empty (each event consumed and acknowledged)."""

    async def empty() -> bool:
        return not any([await _depth(channel, q) for q in queues])

    async def depths() -> list:
        return [(q, await _depth(channel, q)) for q in queues]

    await eventually(empty, timeout, every=0.25, what="the drained queues", seen=depths)


async def _outbox_empty(db, schema: str, timeout: float = RESUME_SECONDS) -> None:
    """Every event the service committed has been published, promptly (not pushed back by a long backoff)."""

    async def left() -> str:
        rows = await db.fetch(f"select event_type, attempts, last_error, next_attempt_at from {schema}.outbox")
        return f"{schema}'s events left: {[dict(r) for r in rows]}"

    await eventually(
        lambda: db.fetchval(f"select count(*) = 0 from {schema}.outbox"),
        timeout,
        every=0.25,
        what="an empty outbox",
        seen=left,
    )
