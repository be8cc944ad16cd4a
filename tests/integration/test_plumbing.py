"""The shared plumbing on the real Postgres and RabbitMQ: migrations, outbox relay, inbox, readiness."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from fastapi.testclient import TestClient
from faststream.rabbit import Channel, RabbitBroker
from prometheus_client import REGISTRY

from shared import topology
from shared.consumer import Batches, Consumer, Delivery, Rejected
from shared.contracts import DocumentReleasedV1, envelope
from shared.db import SHARED_MIGRATIONS, MigrationDrift, migrate, wait_for_migrations
from shared.outbox import OutboxRelay, add_event
from shared.rejections import Reason
from shared.runtime import Runtime
from shared.runtime import main as runtime_main
from shared.settings import ServiceSettings
from tests.conftest import AMQP_URL, DB_PORT
from tests.integration.conftest import throwaway_schema
from tests.waiting import PATIENCE, eventually


@pytest.fixture
async def schema(test_database):
    """A throw-away schema in the test database, reached as the superuser."""
    async with throwaway_schema(test_database, "plumbing") as created:
        yield created


@pytest.fixture
async def broker():
    b = RabbitBroker(AMQP_URL, default_channel=Channel(on_return_raises=True))
    await b.connect()
    yield b
    await b.stop()


def released() -> DocumentReleasedV1:
    return DocumentReleasedV1(
        message_id=uuid.uuid4(), convocation_id=uuid.uuid4(), released_at=datetime.now(timezone.utc)
    )


async def test_replicas_starting_together_apply_each_migration_once(schema, tmp_path: Path):
    name, _, pool = schema
    (tmp_path / "0001_things.sql").write_text("create table thing (id int primary key);")
    files = len(list(SHARED_MIGRATIONS.glob("*.sql"))) + 1
    results = await asyncio.gather(*(migrate(pool, name, tmp_path) for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, files]  # one replica applied shared + service files
    assert await pool.fetchval("select count(*) from schema_migrations") == files
    assert await migrate(pool, name, tmp_path) == []


async def test_a_replica_that_does_not_migrate_waits_for_the_migration_job_or_stops_saying_so(schema, tmp_path):
    """Production (MIGRATE_ON_START=false): the runtime role may not change its schema, so a replica
    waits for the release's migration job instead of migrating, and gives up with a clear error."""
    name, _, pool = schema
    (tmp_path / "0001_things.sql").write_text("create table thing (id int primary key);")
    with pytest.raises(RuntimeError, match="run the release's migration job"):
        await wait_for_migrations(pool, name, tmp_path, wait_seconds=0.2)
    waiting = asyncio.create_task(wait_for_migrations(pool, name, tmp_path, wait_seconds=30))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await migrate(pool, name, tmp_path)  # what `python -m <service> migrate` does
    await asyncio.wait_for(waiting, 5)


async def test_a_migration_changed_after_it_was_applied_stops_the_job_and_the_replicas_saying_which(
    schema, tmp_path, monkeypatch
):
    """Issue 18, item 7: schema_migrations held only the versions, so a file edited after it was applied went
    unnoticed and the schema silently differed from what the release's files say."""
    name, dsn, pool = schema
    first = tmp_path / "0001_things.sql"
    first.write_text("create table thing (id int primary key);")
    await migrate(pool, name, tmp_path)
    assert (
        await pool.fetchval("select checksum from schema_migrations where version = 'service/0001_things.sql'")
        == hashlib.sha256(first.read_bytes()).hexdigest()
    )
    first.write_text("create table thing (id bigint primary key);")  # edited after it went out
    (tmp_path / "0002_more.sql").write_text("create table more (id int);")
    with pytest.raises(MigrationDrift, match=r"service/0001_things\.sql changed since they were applied") as drift:
        await migrate(pool, name, tmp_path)
    assert "put the change in a new migration" in str(drift.value)
    assert await pool.fetchval("select to_regclass('more')") is None  # nothing applied after the refusal
    with pytest.raises(MigrationDrift):  # a replica refuses at once instead of waiting for a job
        await asyncio.wait_for(wait_for_migrations(pool, name, tmp_path, wait_seconds=60), 5)
    # The release's migration Job (`python -m <service> migrate`) exits non-zero with the same message.
    monkeypatch.setenv("DATABASE_URL", dsn)
    with pytest.raises(SystemExit, match=r"service/0001_things\.sql changed"):
        await asyncio.to_thread(runtime_main, "plumbing", name, tmp_path, None, ServiceSettings, ["migrate"])


async def test_migrations_applied_before_checksums_get_them_and_a_newer_releases_are_not_drift(schema, tmp_path):
    name, _, pool = schema
    (tmp_path / "0001_things.sql").write_text("create table thing (id int primary key);")
    await migrate(pool, name, tmp_path)
    # As an earlier release left it (no checksums), and a newer one applied a file this release lacks (rollback).
    await pool.execute("update schema_migrations set checksum = null")
    await pool.execute("insert into schema_migrations(version) values ('service/0099_from_a_newer_release.sql')")
    assert await migrate(pool, name, tmp_path) == []
    assert await pool.fetchval("select count(*) from schema_migrations where checksum is null") == 1  # the newer one
    await asyncio.wait_for(wait_for_migrations(pool, name, tmp_path, wait_seconds=60), 5)


async def test_the_relay_publishes_committed_events_persistently_and_forgets_rolled_back_ones(
    schema, broker, exchange_name
):
    name, dsn, pool = schema
    await migrate(pool, name, Path("/nonexistent"))
    exchange = f"{exchange_name}.plumbing-relay"
    await broker.declare_exchange(topology.events_exchange(exchange))
    queue = await broker.declare_queue(topology.consumer_queue(exchange, "probe", "document.released.v1"))
    await queue.bind(exchange, routing_key="document.released.v1")
    committed, rolled_back = envelope(released(), producer="access-portal", correlation_id=uuid.uuid4()), None
    async with pool.acquire() as conn:
        async with conn.transaction():
            await add_event(conn, committed)
        try:
            async with conn.transaction():
                rolled_back = envelope(released(), producer="access-portal", correlation_id=uuid.uuid4())
                await add_event(conn, rolled_back)
                raise RuntimeError("abort")
        except RuntimeError:
            pass
    relay = OutboxRelay(service="t", schema=name, pool=pool, dsn=dsn, broker=broker, exchange=exchange, poll_seconds=5)
    await relay.start()
    try:
        message = await eventually(
            lambda: queue.get(no_ack=True, fail=False, timeout=PATIENCE), what="the committed event on the queue"
        )
        assert message.message_id == str(committed.event_id)
        assert message.correlation_id == str(committed.correlation_id)
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert json.loads(message.body)["event_id"] == str(committed.event_id)
        await asyncio.sleep(0.3)
        assert await queue.get(no_ack=True, fail=False) is None  # the rolled-back event never left
        assert await pool.fetchval("select count(*) from outbox") == 0
    finally:
        await relay.stop()
        await queue.delete(if_unused=False, if_empty=False)


async def test_an_unroutable_event_stays_in_the_outbox_until_it_can_be_delivered(schema, broker, exchange_name):
    name, dsn, pool = schema
    await migrate(pool, name, Path("/nonexistent"))
    exchange = f"{exchange_name}.plumbing-unroutable"
    await broker.declare_exchange(topology.events_exchange(exchange))
    event = envelope(released(), producer="access-portal", correlation_id=uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        await add_event(conn, event)
    relay = OutboxRelay(
        service="t", schema=name, pool=pool, dsn=dsn, broker=broker, exchange=exchange, poll_seconds=0.2
    )

    async def attempted():
        row = await pool.fetchrow("select attempts, last_error from outbox")
        return row if row["attempts"] else None

    await relay.start()
    try:
        row = await eventually(attempted, what="the relay's first attempt")
        assert row["attempts"] >= 1 and "NO_ROUTE" in row["last_error"]
        queue = await broker.declare_queue(topology.consumer_queue(exchange, "late", "document.released.v1"))
        await queue.bind(exchange, routing_key="document.released.v1")
        await eventually(lambda: pool.fetchval("select count(*) = 0 from outbox"), what="the emptied outbox")
        assert (await queue.get(no_ack=True, fail=False)).message_id == str(event.event_id)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await relay.stop()


async def test_the_relay_holds_a_few_megabytes_of_bodies_at_a_time_not_a_batch_of_letters(
    schema, broker, exchange_name
):
    """Issue #7 item 4: a batch of 50 sealed 10 MB letters was 650 MB in the relay at once."""
    name, dsn, pool = schema
    await migrate(pool, name, Path("/nonexistent"))
    exchange = f"{exchange_name}.plumbing-big"
    await broker.declare_exchange(topology.events_exchange(exchange))
    queue = await broker.declare_queue(topology.consumer_queue(exchange, "big", "document.released.v1"))
    await queue.bind(exchange, routing_key="document.released.v1")
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(3):
            await add_event(conn, envelope(released(), producer="access-portal", correlation_id=uuid.uuid4()))
        await conn.execute("update outbox set body = $1", b"x" * (3 * 1024 * 1024))  # 3 MB each
    relay = OutboxRelay(
        service="t", schema=name, pool=pool, dsn=dsn, broker=broker, exchange=exchange, batch_bytes=4 * 1024 * 1024
    )
    try:
        assert [await relay.relay_once() for _ in range(4)] == [1, 1, 1, 0]  # one 3 MB body per batch, in order
        assert await pool.fetchval("select count(*) from outbox") == 0
    finally:
        await queue.delete(if_unused=False, if_empty=False)


async def _consuming(
    exchange: str, pool: asyncpg.Pool, handler, batches: Batches | None = None
) -> tuple[RabbitBroker, Consumer]:
    """The issuer's consumer of document.released on ``exchange``, started, with its DLQ."""
    consumer_broker = RabbitBroker(AMQP_URL, default_channel=Channel(on_return_raises=True))
    consumer = Consumer(service="issuer", broker=consumer_broker, exchange=exchange, pool_getter=lambda: pool)
    consumer.subscribe(DocumentReleasedV1, handler, batches=batches)
    await consumer_broker.connect()
    await topology.declare_dead_letter_queues(consumer_broker, exchange, consumer.queues, AMQP_URL)
    await consumer_broker.start()
    return consumer_broker, consumer


async def test_an_event_delivered_twice_takes_effect_once(schema, broker, exchange_name):
    name, _, pool = schema
    await migrate(pool, name, Path("/nonexistent"))
    await pool.execute("create table effect (event_id uuid)")
    exchange = f"{exchange_name}.plumbing-dedupe"
    seen = asyncio.Event()

    async def on_released(conn: asyncpg.Connection, d: Delivery[DocumentReleasedV1]) -> None:
        await conn.execute("insert into effect values ($1)", d.envelope.event_id)
        seen.set()

    consumer_broker, consumer = await _consuming(exchange, pool, on_released)
    try:
        event = envelope(released(), producer="access-portal", correlation_id=uuid.uuid4())
        for _ in range(2):
            await broker.publish(
                event.model_dump_json().encode(),
                exchange=exchange,
                routing_key="document.released.v1",
                message_id=str(event.event_id),
                persist=True,
            )
        await asyncio.wait_for(seen.wait(), 10)
        await asyncio.sleep(0.5)
        assert await pool.fetchval("select count(*) from effect") == 1
        assert await pool.fetchval("select count(*) from inbox") == 1
    finally:
        await consumer_broker.stop()


async def _publish_released(broker: RabbitBroker, exchange: str, events) -> None:
    for event in events:
        await broker.publish(
            event.model_dump_json().encode(),
            exchange=exchange,
            routing_key="document.released.v1",
            message_id=str(event.event_id),
            persist=True,
        )


async def _rows_within(pool: asyncpg.Pool, query: str, n: int) -> list:
    """``query``'s rows once there are ``n`` of them."""

    async def enough() -> list | None:
        rows = await pool.fetch(query)
        return rows if len(rows) >= n else None

    return await eventually(enough, what=f"{n} rows of {query!r}")


async def _left_in(queue: str) -> tuple[int, int]:
    """(messages in ``queue``, in its DLQ): with its consumer stopped, an unacknowledged one is back in it."""
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        return tuple(
            [
                (await channel.declare_queue(name, passive=True)).declaration_result.message_count
                for name in (queue, f"{queue}.dlq")
            ]
        )


async def _delete_queues(consumer: Consumer) -> None:
    async with await aio_pika.connect(AMQP_URL) as cleanup:
        channel = await cleanup.channel()
        for queue in consumer.queues:
            await channel.queue_delete(queue)
            await channel.queue_delete(f"{queue}.dlq")


async def test_events_that_arrive_together_are_handled_in_one_transaction_each_once(schema, broker, exchange_name):
    """A batch: the events waiting in the queue when the consumer starts share one inbox claim and one
    commit, at most ``at_most`` of them, handled in the order of the rows they lock; a duplicate inside
    the batch and one already in the inbox take no effect; all are acknowledged."""
    name, _, pool = schema
    await migrate(pool, name, Path("/nonexistent"))
    await pool.execute("create table effect (n serial, event_id uuid, convocation_id uuid, tx bigint)")
    exchange = f"{exchange_name}.plumbing-batch"
    batches = Batches(at_most=8, linger=0.5, order=lambda released: released.convocation_id)

    async def on_released(conn: asyncpg.Connection, d: Delivery[DocumentReleasedV1]) -> None:
        await conn.execute(
            "insert into effect(event_id, convocation_id, tx) values ($1, $2, txid_current())",
            d.envelope.event_id,
            d.data.convocation_id,
        )

    events = [envelope(released(), producer="access-portal", correlation_id=uuid.uuid4()) for _ in range(20)]
    consumer_broker, consumer = await _consuming(exchange, pool, on_released, batches)
    await consumer_broker.stop()  # queues declared and bound; nothing consumed yet
    try:
        await pool.execute(
            "insert into inbox(event_id, routing_key) values ($1, 'document.released.v1')", events[0].event_id
        )  # handled before: a redelivery
        await _publish_released(broker, exchange, [*events, events[5]])  # and event 5 twice in the batch
        consumer_broker, consumer = await _consuming(exchange, pool, on_released, batches)
        effects = await _rows_within(pool, "select event_id, convocation_id, tx from effect order by n", 19)
        await asyncio.sleep(0.3)  # acknowledged right after the commit
        await consumer_broker.stop()
        assert await _left_in(consumer.queues[0]) == (0, 0)
        assert sorted(str(r["event_id"]) for r in effects) == sorted(str(e.event_id) for e in events[1:])
        batches_seen = [[r["convocation_id"] for r in effects if r["tx"] == tx] for tx in {r["tx"] for r in effects}]
        assert len(batches_seen) < len(effects) // 2, "the waiting events shared transactions"
        assert all(len(b) <= 8 and b == sorted(b) for b in batches_seen), batches_seen
        assert await pool.fetchval("select count(*) from inbox") == 20
    finally:
        await consumer_broker.stop()
        await _delete_queues(consumer)


async def test_a_batch_with_an_event_that_fails_is_rolled_back_and_its_events_handled_alone(
    schema, broker, exchange_name
):
    """One refused event in a batch: nothing of the batch's transaction stays; each event is then handled
    alone, the refused one dead-lettered with its reason and every other one taking effect once."""
    name, _, pool = schema
    await migrate(pool, name, Path("/nonexistent"))
    await pool.execute("create table effect (event_id uuid)")
    exchange = f"{exchange_name}.plumbing-batch-fails"
    events = [envelope(released(), producer="access-portal", correlation_id=uuid.uuid4()) for _ in range(10)]
    refused = events[4].event_id
    attempts: list[uuid.UUID] = []

    async def on_released(conn: asyncpg.Connection, d: Delivery[DocumentReleasedV1]) -> None:
        attempts.append(d.envelope.event_id)
        await conn.execute("insert into effect values ($1)", d.envelope.event_id)
        if d.envelope.event_id == refused:
            raise Rejected(Reason("refused-for-the-test", "a test refuses it", ("tests",)), "this one is refused")

    consumer_broker, consumer = await _consuming(exchange, pool, on_released, Batches(linger=0.5))
    await consumer_broker.stop()
    try:
        await _publish_released(broker, exchange, events)
        consumer_broker, consumer = await _consuming(exchange, pool, on_released, Batches(linger=0.5))
        effects = [r["event_id"] for r in await _rows_within(pool, "select event_id from effect", 9)]
        await asyncio.sleep(0.3)
        await consumer_broker.stop()
        assert await _left_in(consumer.queues[0]) == (0, 1)
        assert sorted(map(str, effects)) == sorted(str(e.event_id) for e in events if e.event_id != refused)
        tried_twice = {e for e in attempts if attempts.count(e) == 2} - {refused}
        assert tried_twice, "the refused event's batch companions were tried in it, then alone"
        async with await aio_pika.connect(AMQP_URL) as connection:
            dead = await (await connection.channel()).get_queue(f"{consumer.queues[0]}.dlq")
            message = await dead.get(timeout=5)
            assert (message.message_id, message.headers["x-rejected-reason"]) == (str(refused), "refused-for-the-test")
            await message.ack()
    finally:
        await consumer_broker.stop()
        await _delete_queues(consumer)


async def test_a_failure_after_the_handler_is_counted_as_a_consumer_error(schema, broker, exchange_name):
    """FastStream logs nothing of ours (shared/runtime.py): when dead-lettering an invalid event fails
    (here its DLQ was deleted: the broker returns the copy), the consumer-errors alert must still see it."""
    name, _, pool = schema
    await migrate(pool, name, Path("/nonexistent"))
    exchange = f"{exchange_name}.plumbing-after"

    async def never(conn: asyncpg.Connection, d: Delivery[DocumentReleasedV1]) -> None:
        raise AssertionError("an invalid event never reaches the handler")

    def errors() -> float:
        return (
            REGISTRY.get_sample_value(
                "convocations_events_consumed_total",
                {"service": "issuer", "type": "document.released", "outcome": "error"},
            )
            or 0.0
        )

    consumer_broker, consumer = await _consuming(exchange, pool, never)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        async with connection:
            await (await connection.channel()).queue_delete(f"{consumer.queues[0]}.dlq")
        before = errors()
        await broker.publish(
            b"not json",
            exchange=exchange,
            routing_key="document.released.v1",
            message_id=str(uuid.uuid4()),
            persist=True,
        )
        await eventually(lambda: errors() > before, what="the consumer's counted error")
        assert errors() == before + 1
    finally:
        await consumer_broker.stop()
        async with await aio_pika.connect(AMQP_URL) as cleanup:
            channel = await cleanup.channel()
            for queue in consumer.queues:
                await channel.queue_delete(queue)
                await channel.queue_delete(f"{queue}.dlq")


def test_readiness_fails_while_the_database_and_broker_are_unreachable(tmp_path):
    settings = ServiceSettings(
        amqp_url="amqp://guest:guest@127.0.0.1:1/", database_url="postgresql://nobody@127.0.0.1:1/none"
    )
    runtime = Runtime("probe", "probe", settings, tmp_path)
    client = TestClient(runtime.http_app())  # no lifespan: nothing could connect
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "database": False, "broker": False}
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "role,other",
    [("mailer", "issuer"), ("access_portal", "sms_gateway"), ("issuer", "access_portal"), ("sms_gateway", "mailer")],
)
async def test_each_service_role_reaches_only_its_own_schema(stack, test_database, role, other):
    """The services have run their migrations (the stack fixture); each role owns only its schema."""
    conn = await asyncpg.connect(f"postgresql://{role}:{role}@127.0.0.1:{DB_PORT}/{test_database}")
    try:
        assert await conn.fetchval(f"select count(*) >= 0 from {role}.outbox")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f"select * from {other}.outbox limit 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("create table public.intruder (x int)")
    finally:
        await conn.close()
