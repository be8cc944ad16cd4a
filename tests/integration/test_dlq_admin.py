"""convocations-admin dlq on the real broker: what the broker itself parked after the delivery limit and
what a consumer parked are listed with their reason and age, shown without patient data, replayed to
their original queue only, and purged with a record of who and why in the database; looking changes
nothing, even where every queue is delivery-limited (RabbitMQ 4's default); a DLQ of the earlier shape
is migrated without losing a letter; and a queue of large letters is read one letter at a time."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path

import aio_pika
import pytest
from faststream.rabbit import QueueType, RabbitBroker, RabbitQueue

from convocations_admin.dlq import DeadLetterOffice
from shared import topology
from tests.conftest import AMQP_URL, DB_PORT, RABBITMQCTL, VHOST

ROOT = Path(__file__).resolve().parents[2]
KEY = "convocation.created.v1"


@pytest.fixture(scope="module")
def operations_url(test_database) -> str:
    return f"postgresql://convocations_admin:convocations_admin@127.0.0.1:{DB_PORT}/{test_database}"


def admin(exchange: str, database: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "AMQP_URL": AMQP_URL,
        "EVENTS_EXCHANGE": exchange,
        "OPERATIONS_DATABASE_URL": database,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'tools'}",
    }
    return subprocess.run(
        [sys.executable, "-m", "convocations_admin", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


def event(name: str, size: int = 0) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "convocation.created",
            "version": 1,
            "data": {"patient": {"name": name, "email": "someone@example.ch"}, "document_pdf_base64": "A" * size},
        }
    ).encode()


@contextlib.asynccontextmanager
async def bus(prefix: str = "dlqtest"):
    """(exchange, consumer queue, broker, channel): a consumer queue and its DLQ as a service declares them."""
    exchange = f"{prefix}{uuid.uuid4().hex[:8]}"
    queue = topology.consumer_queue(exchange, "issuer", KEY)
    broker = RabbitBroker(AMQP_URL)
    await broker.connect()
    connection = await aio_pika.connect(AMQP_URL)
    try:
        yield exchange, queue, broker, await connection.channel()
    finally:
        cleanup = await connection.channel()
        for name in (queue.name, f"{queue.name}.dlq", f"{queue.name}.dlq.migrating"):
            await cleanup.queue_delete(name)
        for name in (exchange, f"{exchange}.dlx"):
            await cleanup.exchange_delete(name)
        await connection.close()
        await broker.stop()


async def park(channel, exchange: str, queue: str, body: bytes, event_id: str, reason: str = "malformed-json") -> None:
    """What a consumer does with an event it refuses (shared/consumer.py)."""
    dlx = await channel.get_exchange(f"{exchange}.dlx")
    await dlx.publish(
        aio_pika.Message(
            body,
            message_id=event_id,
            headers={
                "x-rejected-reason": reason,
                "x-rejected-detail": "body is not JSON",
                "x-rejected-by": "issuer",
                "x-rejected-at": "2026-01-01T00:00:00+00:00",
            },
        ),
        routing_key=queue,
    )


async def depth(channel, name: str) -> int:
    return (await channel.declare_queue(name, passive=True)).declaration_result.message_count


@contextlib.contextmanager
def delivery_limit_policy(pattern: str, limit: int):
    """Every matching queue delivery-limited, as RabbitMQ 4 limits every quorum queue (20) by default."""
    ctl = [RABBITMQCTL, "-q"]
    subprocess.run(
        [
            *ctl,
            "set_policy",
            "-p",
            VHOST,
            "--apply-to",
            "queues",
            "dlqlimit",
            pattern,
            json.dumps({"delivery-limit": limit}),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield
    finally:
        subprocess.run([*ctl, "clear_policy", "-p", VHOST, "dlqlimit"], capture_output=True, timeout=60)


def queue_type(name: str) -> str:
    out = subprocess.run(
        [RABBITMQCTL, "-q", "list_queues", "-p", VHOST, "--no-table-headers", "name", "type"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())[name]


async def test_dead_letters_are_listed_shown_replayed_and_purged_with_a_record(admin_db, operations_url):
    async with bus() as (exchange, queue, broker, channel):
        await topology.declare_dead_letter_queues(broker, exchange, [queue.name], AMQP_URL)
        declared = await broker.declare_queue(queue)
        await declared.bind(exchange, routing_key=KEY)

        # 1. A handler that keeps crashing: the quorum queue's delivery limit parks the event.
        crashed_id = str(uuid.uuid4())
        await channel.default_exchange.publish(
            aio_pika.Message(
                event("Marie Dupont"),
                message_id=crashed_id,
                type="convocation.created",
                headers={"x-producer": "hospital-his"},
            ),
            routing_key=queue.name,
        )
        work = await channel.get_queue(queue.name, ensure=False)
        for _ in range(topology.DELIVERY_LIMIT + 5):
            message = await work.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            await message.nack(requeue=True)
        # 2. What a consumer parks itself, with its reason headers (shared/consumer.py).
        invalid_id = str(uuid.uuid4())
        await park(channel, exchange, queue.name, b"{not json", invalid_id)

        listed = admin(exchange, operations_url, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        letters = {d["event_id"]: d for d in map(json.loads, listed.stdout.splitlines())}
        assert set(letters) == {crashed_id, invalid_id}
        assert letters[crashed_id]["reason"] == "delivery_limit"
        assert letters[crashed_id]["queue"] == f"{queue.name}.dlq"
        assert 0 <= letters[crashed_id]["age_seconds"] < 60
        assert letters[invalid_id]["reason"] == "malformed-json"
        assert letters[invalid_id]["age_seconds"] > 3600  # dead-lettered long ago, by its header
        table = admin(exchange, operations_url, "list")
        assert "delivery_limit" in table.stdout and "malformed-json" in table.stdout

        shown = admin(exchange, operations_url, "show", f"{queue.name}.dlq", crashed_id)
        assert shown.returncode == 0, shown.stderr
        outline = json.loads(shown.stdout)
        assert outline["reason"] == "delivery_limit" and outline["original_queue"] == queue.name
        assert set(outline["data_fields"]) == {"patient", "document_pdf_base64"}
        assert "Marie Dupont" not in shown.stdout and "someone@example.ch" not in shown.stdout
        assert await depth(channel, f"{queue.name}.dlq") == 2  # reading is not removing

        replayed = admin(
            exchange, operations_url, "replay", f"{queue.name}.dlq", "--id", crashed_id, "--operator", "alice"
        )
        assert replayed.returncode == 0, replayed.stderr
        back = await work.get(no_ack=True, timeout=5)
        assert back.message_id == crashed_id and json.loads(back.body)["data"]["patient"]["name"] == "Marie Dupont"
        assert "x-death" not in (back.headers or {}) and back.headers["x-producer"] == "hospital-his"
        assert await work.get(no_ack=True, fail=False) is None  # only the original queue got it, once

        # --all asks first; without a terminal and without --yes it changes nothing, --dry-run neither.
        refused = admin(exchange, operations_url, "purge", f"{queue.name}.dlq", "--all")
        assert refused.returncode != 0 and "--reason" in refused.stderr  # no purge without a why
        unconfirmed = admin(exchange, operations_url, "purge", f"{queue.name}.dlq", "--all", "--reason", "x")
        assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr, unconfirmed.stderr
        dry = admin(exchange, operations_url, "purge", f"{queue.name}.dlq", "--all", "--reason", "x", "--dry-run")
        assert dry.returncode == 0 and f"would purge {invalid_id}" in dry.stdout and "nothing was changed" in dry.stdout
        assert await depth(channel, f"{queue.name}.dlq") == 1
        purged = admin(
            exchange,
            operations_url,
            "purge",
            f"{queue.name}.dlq",
            "--all",
            "--yes",
            "--operator",
            "bob",
            "--reason",
            "upstream resent a corrected event",
        )
        assert purged.returncode == 0, purged.stderr
        assert admin(exchange, operations_url, "list").stdout.strip() == "no dead letters"

        records = await admin_db.fetch(
            "select action, operator, event_id, why, event_type, dead_letter_reason"
            " from operations.dlq_action where queue = $1 order by id",
            f"{queue.name}.dlq",
        )
        assert [(r["action"], r["operator"], r["event_id"], r["why"]) for r in records] == [
            ("replay", "alice", crashed_id, None),
            ("purge", "bob", invalid_id, "upstream resent a corrected event"),
        ]
        assert records[0]["dead_letter_reason"] == "delivery_limit"
        assert "Marie Dupont" not in str([dict(r) for r in records])


async def test_the_record_is_append_only_for_the_tool(operations_url):
    import asyncpg

    conn = await asyncpg.connect(operations_url)
    try:
        for statement in (
            "update operations.dlq_action set operator = 'someone else'",
            "delete from operations.dlq_action",
            "truncate operations.dlq_action",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_looking_more_often_than_the_delivery_limit_leaves_the_letter_there_and_replayable(operations_url):
    """Issue 18, item 4: `dlq list` and `dlq show` took the letters and handed them back, which counts a
    delivery on a quorum queue: under RabbitMQ 4's default limit (20; 2 here, by policy) looking dropped
    them. The DLQ is a classic queue now, which no delivery limit applies to."""
    async with bus() as (exchange, queue, broker, channel):
        await topology.declare_dead_letter_queues(broker, exchange, [queue.name], AMQP_URL)
        await (await broker.declare_queue(queue)).bind(exchange, routing_key=KEY)
        event_id = str(uuid.uuid4())
        await park(channel, exchange, queue.name, event("Marie Dupont"), event_id, reason="unknown-convocation")
        with delivery_limit_policy(rf"^{exchange}\..*", 2):
            for _ in range(3):
                assert event_id in admin(exchange, operations_url, "list").stdout
                shown = admin(exchange, operations_url, "show", f"{queue.name}.dlq", event_id)
                assert shown.returncode == 0, shown.stderr
            assert "x-delivery-count" not in json.loads(shown.stdout)["headers"]
            assert await depth(channel, f"{queue.name}.dlq") == 1
            replayed = admin(exchange, operations_url, "replay", f"{queue.name}.dlq", "--all", "--yes")
            assert replayed.returncode == 0, replayed.stderr
        back = await (await channel.get_queue(queue.name, ensure=False)).get(no_ack=True, timeout=5)
        assert back.message_id == event_id
        assert queue_type(f"{queue.name}.dlq") == "classic"


async def test_a_dlq_of_the_earlier_shape_is_migrated_without_losing_a_letter(admin_db, operations_url):
    """Before this release the DLQs were quorum queues. A service leaves one as it is (still bound, still
    filling), the tool refuses to look into it, and `dlq migrate` moves it to the classic shape: every
    letter is there after, with its reason, and new dead letters keep arriving in it."""
    async with bus() as (exchange, queue, broker, channel):
        dlx = await broker.declare_exchange(topology.dead_letter_exchange(exchange))
        old = await broker.declare_queue(RabbitQueue(f"{queue.name}.dlq", queue_type=QueueType.QUORUM, durable=True))
        await old.bind(dlx, routing_key=queue.name)  # as the earlier release declared it
        ids = [str(uuid.uuid4()) for _ in range(5)]
        for event_id in ids:
            await park(channel, exchange, queue.name, event("Marie Dupont"), event_id)
        with delivery_limit_policy(rf"^{exchange}\..*", 2):
            earlier = await topology.declare_dead_letter_queues(broker, exchange, [queue.name], AMQP_URL)
            assert earlier == [f"{queue.name}.dlq"]
            looked = admin(exchange, operations_url, "show", f"{queue.name}.dlq", ids[0])
            assert looked.returncode == 1 and "dlq migrate" in looked.stderr
            listed = admin(exchange, operations_url, "list")
            assert "earlier release" in listed.stderr and ids[0] not in listed.stdout
            dry = admin(exchange, operations_url, "migrate", "--dry-run")
            assert dry.returncode == 0 and f"would move {queue.name}.dlq (5 letter(s))" in dry.stdout
            assert queue_type(f"{queue.name}.dlq") == "quorum"
            migrated = admin(exchange, operations_url, "migrate", "--yes", "--operator", "carol")
            assert migrated.returncode == 0, migrated.stderr
            assert f"moved {queue.name}.dlq: 5 letter(s)" in migrated.stdout
        assert queue_type(f"{queue.name}.dlq") == "classic"
        letters = {
            d["event_id"]: d
            for d in map(json.loads, admin(exchange, operations_url, "list", "--json").stdout.splitlines())
        }
        assert set(letters) == set(ids) and {d["reason"] for d in letters.values()} == {"malformed-json"}
        late = str(uuid.uuid4())
        await park(channel, exchange, queue.name, event("Marie Dupont"), late)
        assert await depth(channel, f"{queue.name}.dlq") == 6
        assert await topology.declare_dead_letter_queues(broker, exchange, [queue.name], AMQP_URL) == []
        (record,) = await admin_db.fetch(
            "select operator, detail from operations.dlq_action where action = 'migrate' and queue = $1",
            f"{queue.name}.dlq",
        )
        assert record["operator"] == "carol" and "5 letter(s) moved out, 5 moved back" in record["detail"]


async def test_a_queue_of_large_letters_is_read_and_replayed_one_letter_at_a_time(operations_url):
    """Issue 18, item 4: the tool took every message of a DLQ into memory at once, PDFs included."""
    letters, size = 12, 2 * 1024 * 1024
    async with bus() as (exchange, queue, broker, channel):
        await topology.declare_dead_letter_queues(broker, exchange, [queue.name], AMQP_URL)
        await (await broker.declare_queue(queue)).bind(exchange, routing_key=KEY)
        for _ in range(letters):
            await park(channel, exchange, queue.name, event("Marie Dupont", size), str(uuid.uuid4()))
        async with DeadLetterOffice(AMQP_URL, exchange, operations_url, "dave") as office:
            tracemalloc.start()
            try:
                listed = [d async for d in office.letters(f"{queue.name}.dlq")]
                _, listing_peak = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                replayed = await office.replay(f"{queue.name}.dlq", None)
                _, replay_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert len(listed) == len(replayed) == letters
        # The whole queue is 24 MB: reading it holds about one letter (and a copy while publishing it).
        assert listing_peak < 3 * size, f"listing peaked at {listing_peak / 2**20:.1f} MiB"
        assert replay_peak < 4 * size, f"replaying peaked at {replay_peak / 2**20:.1f} MiB"
        assert await depth(channel, queue.name) == letters and await depth(channel, f"{queue.name}.dlq") == 0


async def test_a_dead_letter_whose_original_queue_is_gone_stays_on_the_dlq(admin_db, operations_url):
    """The default exchange returns a copy for a queue that does not exist (deleted, renamed) and the
    broker still confirms it: replay must see the return, keep the letter and say what to do."""
    async with bus() as (exchange, queue, broker, channel):
        await topology.declare_dead_letter_queues(broker, exchange, [queue.name], AMQP_URL)  # the queue is gone
        ids = [str(uuid.uuid4()), str(uuid.uuid4())]
        for event_id in ids:
            await park(channel, exchange, queue.name, event("Marie Dupont"), event_id, reason="unknown-convocation")

        replayed = admin(
            exchange, operations_url, "replay", f"{queue.name}.dlq", "--all", "--yes", "--operator", "alice"
        )
        assert replayed.returncode != 0
        assert f"no queue {queue.name}" in replayed.stderr and "0 dead letter(s) replayed" in replayed.stderr
        assert "exists" in replayed.stderr and "the issuer, which declares it" in replayed.stderr  # what to do
        assert "Traceback" not in replayed.stderr

        listed = admin(exchange, operations_url, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert sorted(json.loads(line)["event_id"] for line in listed.stdout.splitlines()) == sorted(ids)
        assert not await admin_db.fetchval(
            "select count(*) from operations.dlq_action where queue = $1", f"{queue.name}.dlq"
        )  # nothing replayed, nothing recorded
