"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import uuid

import aio_pika
import asyncpg
import pytest

from devstack.sample import convocation_event, publish, sample_pdf
from devstack.stack import KEY_STORE, ROOT
from devstack.stack import SERVICES as STACK_SERVICES
from tests.conftest import ADMIN_DSN, AMQP_URL, SCHEMAS
from tests.waiting import PATIENCE, eventually


@pytest.fixture(scope="session", autouse=True)
def _servers(rabbitmq, postgres, services_forked):
    """This tier runs on the tests' RabbitMQ node and PostgreSQL cluster (tests/conftest.py), started for it,
    and starts its services from the fork server."""


def random_mobile() -> tuple[str, str]:
    """(E.164, national form) of a fresh valid Swiss mobile number: tests never share a number."""
    digits = f"{random.randrange(10**7):07d}"
    return f"+4179{digits}", f"079 {digits[:3]} {digits[3:5]} {digits[5:]}"


def random_email() -> str:
    return f"patient-{uuid.uuid4().hex[:12]}@example.ch"


class Chain:
    """Drives the chain from outside, as the hospital and the patient would."""

    def __init__(self, stack, devinbox, admin_db, exchange, print_room=None):
        self.stack, self.inbox, self.db, self.exchange = stack, devinbox.inbox, admin_db, exchange
        self.print_room = print_room
        self._upstream: dict[str, list[dict]] = {}

    async def upstream(self, routing_key: str, correlation_id: str, until, timeout: float = PATIENCE) -> list[dict]:
        """Events the hospital's systems receive on their queue (e.g. convocation.status.v1) for one
        convocation, waiting until ``until(events)`` holds. Every event read is kept for later calls."""
        queue = f"{self.exchange}.upstream.{routing_key}"
        seen = self._upstream.setdefault(queue, [])
        conn = await aio_pika.connect(AMQP_URL)
        mine: list[dict] = []
        async with conn:
            channel = await conn.channel()
            q = await channel.get_queue(queue, ensure=True)

            async def arrived() -> bool:
                nonlocal mine
                while (message := await q.get(no_ack=True, fail=False, timeout=PATIENCE)) is not None:
                    seen.append(json.loads(message.body))
                mine = [e for e in seen if e["correlation_id"] == correlation_id]
                return bool(until(mine))

            await eventually(
                arrived,
                timeout,
                every=0.05,
                what=f"the expected {routing_key} events upstream",
                seen=lambda: f"got {mine}",
            )
        return mine

    async def postal(
        self, correlation_id: str, until=lambda events: len(events) >= 1, timeout: float = PATIENCE
    ) -> list[dict]:
        """The postal.requested events the development print room read for one convocation, waiting until
        ``until(events)`` holds."""
        mine: list[dict] = []

        def read() -> bool:
            nonlocal mine
            mine = [e for e in self.print_room.requests if e["correlation_id"] == correlation_id]
            return bool(until(mine))

        await eventually(
            read,
            timeout,
            every=0.05,
            what="the print room's expected letters",
            seen=lambda: f"got {len(mine)}. {self.print_room.problem()}",
        )
        return mine

    def event(self, **kw) -> dict:
        kw.setdefault("email", random_email())
        if "mobile" not in kw:
            kw["mobile"] = random_mobile()[1]
        kw.setdefault("pdf", sample_pdf(f"Convocation {uuid.uuid4().hex[:8]}"))
        return convocation_event(**kw)

    async def publish(self, event: dict | bytes, **kw) -> None:
        await publish(AMQP_URL, self.exchange, event, **kw)

    async def email_to(self, address: str, timeout: float = PATIENCE):
        return await self.inbox.await_email(lambda m: address in m["rcpt_tos"], timeout=timeout)

    async def portal_copy(self, message_id: uuid.UUID) -> None:
        """Until the portal holds the message: it gets message.sealed on a queue of its own, and under load the
        e-mail, which goes through the mailer's queue, can arrive first."""
        await eventually(
            lambda: self.db.fetchval("select true from access_portal.message where message_id = $1", message_id),
            what="the portal's copy of the message",
        )

    async def sms_to(self, e164: str, timeout: float = PATIENCE, nth: int = 1) -> dict:
        """The ``nth`` SMS sent to this number (waits for it)."""

        def sent():
            texts = [s for s in self.inbox.sms() if s["to"] == e164]
            return sorted(texts, key=lambda s: s["received_at"])[nth - 1] if len(texts) >= nth else None

        return await eventually(sent, timeout, every=0.05, what=f"SMS number {nth} to the patient's phone")

    def sms_count(self, e164: str) -> int:
        return sum(1 for s in self.inbox.sms() if s["to"] == e164)

    def emails_to(self, address: str) -> list:
        return [m for m in self.inbox.emails() if address in m["rcpt_tos"]]

    async def status(self, convocation_id: str) -> str | None:
        return await self.db.fetchval("select status from issuer.convocation where id = $1", uuid.UUID(convocation_id))

    async def wait_status(self, convocation_id: str, status: str, timeout: float = PATIENCE) -> None:
        async def reached() -> bool:
            return await self.status(convocation_id) == status

        async def stayed() -> str:
            return f"it stayed {await self.status(convocation_id)!r}"

        await eventually(reached, timeout, what=f"the status {status!r}", seen=stayed)

    async def dump_all_tables(self) -> str:
        """Every row of every table of every service (and their audits), as text (bytea as hex)."""
        tables = await self.db.fetch(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema = any($1::text[]) and table_type = 'BASE TABLE'",
            list(SCHEMAS),
        )
        parts = []
        for t in tables:
            rows = await self.db.fetch(f'select t::text as row from "{t["table_schema"]}"."{t["table_name"]}" t')
            parts += [r["row"] for r in rows]
        return "\n".join(parts)

    async def period_key(self, expires_at):
        """The stack's key store's period key for a letter expiring then, as the issuer asks it (a test that
        seals a letter itself seals it under this)."""
        from shared.keystore import KeyStore
        from shared.settings import DEV_KEY_STORE_TOKENS

        return await KeyStore(self.stack.url("key-store"), DEV_KEY_STORE_TOKENS[0]).for_expiry(expires_at)

    async def dead_letters(self, queue: str, message_ids: set[str], timeout: float = PATIENCE) -> dict:
        """The messages with these ids parked on a queue's dead-letter queue, by id (waits for all; with no
        ids, those parked now)."""
        conn = await aio_pika.connect(AMQP_URL)
        found: dict[str, aio_pika.IncomingMessage] = {}
        async with conn:
            channel = await conn.channel()
            q = await channel.get_queue(f"{queue}.dlq", ensure=True)

            async def parked() -> bool:
                while (message := await q.get(no_ack=True, fail=False, timeout=PATIENCE)) is not None:
                    found[message.message_id] = message
                return message_ids <= found.keys()

            await eventually(
                parked,
                timeout,
                what=f"the dead-lettering of {sorted(message_ids)} on {queue}.dlq",
                seen=lambda: f"it holds {sorted(found, key=str)}",
            )
        return found


@pytest.fixture(scope="session")
def chain(stack, devinbox, admin_db, exchange_name, print_room) -> Chain:
    return Chain(stack, devinbox, admin_db, exchange_name, print_room)


def json_body(message) -> dict:
    return json.loads(message.body)


SIX_DIGITS = re.compile(r"#(\d{6})\b")


def code_of(sms: dict) -> str:
    match = SIX_DIGITS.search(sms["body"])
    assert match, f"no origin-bound code line in the SMS: {sms['body']!r}"
    return match.group(1)


def pytest_collection_modifyitems(items):
    """The Prometheus checks run after every other end-to-end test: they judge the rules against what the
    session's services expose by then (every series counted since each one's last start), and their
    induced faults (a replica cut from its database) come last."""
    watched = [i for i in items if i.path.name == "test_prometheus.py"]
    if not watched:
        return
    others = [i for i in items if i not in watched]
    last_e2e = max((n for n, i in enumerate(others) if "/tests/e2e/" in str(i.path)), default=len(others) - 1)
    items[:] = others[: last_e2e + 1] + watched + others[last_e2e + 1 :]


@pytest.fixture(scope="session", autouse=True)
def _series_of_the_whole_run(request):
    """``make prometheus-series`` (RECORD_SERIES=1) records every label set the run exposed, those of services
    restarted by later tests too: Prometheus then watches from the session's start."""
    if os.environ.get("RECORD_SERIES"):
        request.getfixturevalue("prometheus")


@pytest.fixture(scope="session")
def prometheus(stack, tmp_path_factory):
    """Debian's Prometheus and blackbox exporter scraping the session's services, readiness and broker with
    the shipped rules on a test's time scale (tests/e2e/prometheus.py), from the first test that asks for it
    (test_prometheus.py's, which run last) to the end of the session: scraping every service each second
    costs CPU, and each service exposes every series it has counted since its last start. Under
    RECORD_SERIES, from the session's start (``_series_of_the_whole_run``)."""
    from tests.conftest import BROKER
    from tests.e2e.prometheus import Prometheus

    watcher = Prometheus(
        tmp_path_factory.mktemp("prometheus"),
        {name: [stack.url(name)] for name in [*STACK_SERVICES, KEY_STORE]},
        BROKER.prometheus_port if BROKER else None,
    ).start()
    yield watcher
    watcher.stop()


@pytest.fixture
async def own_database(test_database):
    """(name, superuser connection) of a database of its own, for a test's own stack: the session stack's
    outbox relays would otherwise take the rows of the same schemas and publish them to their exchange."""
    name = f"{test_database}_{uuid.uuid4().hex[:6]}"
    subprocess.run([str(ROOT / "scripts/db-setup.sh"), name], check=True, capture_output=True)
    db = await asyncpg.connect(ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield name, db
    finally:
        await db.close()
        subprocess.run(
            [
                "psql",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                f'drop database if exists "{name}" with (force)',
            ],
            capture_output=True,
        )
