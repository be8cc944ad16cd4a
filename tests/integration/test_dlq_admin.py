"""convocations-admin dlq on the real broker: what the broker itself parked after the delivery limit and
what a consumer parked are listed with their reason and age, shown without patient data, replayed to
their original queue only, and purged with a record of who and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
from faststream.rabbit import RabbitBroker

from shared import topology
from tests.conftest import AMQP_URL

ROOT = Path(__file__).resolve().parents[2]
KEY = "convocation.created.v1"


def admin(exchange: str, audit: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMQP_URL": AMQP_URL, "EVENTS_EXCHANGE": exchange, "DLQ_AUDIT_LOG": str(audit),
           "PYTHONPATH": f"{ROOT}:{ROOT / 'tools'}"}
    return subprocess.run([sys.executable, "-m", "convocations_admin", "dlq", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def event(name: str) -> bytes:
    return json.dumps({"event_id": str(uuid.uuid4()), "type": "convocation.created", "version": 1,
                       "data": {"patient": {"name": name, "email": "someone@example.ch"}}}).encode()


async def test_dead_letters_are_listed_shown_replayed_and_purged_with_a_record(tmp_path):
    exchange = f"dlqtest{uuid.uuid4().hex[:8]}"
    queue = topology.consumer_queue(exchange, "issuer", KEY)
    broker = RabbitBroker(AMQP_URL)
    await broker.connect()
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await topology.declare_dead_letter_queues(broker, exchange, [queue.name])
        declared = await broker.declare_queue(queue)
        await declared.bind(exchange, routing_key=KEY)
        channel = await connection.channel()

        # 1. A handler that keeps crashing: the quorum queue's delivery limit parks the event.
        crashed_id = str(uuid.uuid4())
        await channel.default_exchange.publish(
            aio_pika.Message(event("Marie Dupont"), message_id=crashed_id, type="convocation.created",
                             headers={"x-producer": "hospital-his"}), routing_key=queue.name)
        work = await channel.get_queue(queue.name, ensure=False)
        for _ in range(topology.DELIVERY_LIMIT + 5):
            message = await work.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            await message.nack(requeue=True)
        # 2. What a consumer parks itself, with its reason headers (shared/consumer.py).
        invalid_id = str(uuid.uuid4())
        dlx = await channel.get_exchange(f"{exchange}.dlx")
        await dlx.publish(aio_pika.Message(b"{not json", message_id=invalid_id, headers={
            "x-rejected-reason": "malformed-json", "x-rejected-detail": "body is not JSON",
            "x-rejected-by": "issuer", "x-rejected-at": "2026-01-01T00:00:00+00:00"}), routing_key=queue.name)
        audit = tmp_path / "audit" / "dlq.jsonl"

        listed = admin(exchange, audit, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        letters = {d["event_id"]: d for d in map(json.loads, listed.stdout.splitlines())}
        assert set(letters) == {crashed_id, invalid_id}
        assert letters[crashed_id]["reason"] == "delivery_limit"
        assert letters[crashed_id]["queue"] == f"{queue.name}.dlq"
        assert 0 <= letters[crashed_id]["age_seconds"] < 60
        assert letters[invalid_id]["reason"] == "malformed-json"
        assert letters[invalid_id]["age_seconds"] > 3600  # dead-lettered long ago, by its header
        table = admin(exchange, audit, "list")
        assert "delivery_limit" in table.stdout and "malformed-json" in table.stdout

        shown = admin(exchange, audit, "show", f"{queue.name}.dlq", crashed_id)
        assert shown.returncode == 0, shown.stderr
        outline = json.loads(shown.stdout)
        assert outline["reason"] == "delivery_limit" and outline["original_queue"] == queue.name
        assert outline["data_fields"] == {"patient": "dict"}
        assert "Marie Dupont" not in shown.stdout and "someone@example.ch" not in shown.stdout
        # Reading is not removing.
        assert (await channel.declare_queue(f"{queue.name}.dlq", passive=True)).declaration_result.message_count == 2

        replayed = admin(exchange, audit, "replay", f"{queue.name}.dlq", "--id", crashed_id, "--operator", "alice")
        assert replayed.returncode == 0, replayed.stderr
        back = await work.get(no_ack=True, timeout=5)
        assert back.message_id == crashed_id and json.loads(back.body)["data"]["patient"]["name"] == "Marie Dupont"
        assert "x-death" not in (back.headers or {}) and back.headers["x-producer"] == "hospital-his"
        assert await work.get(no_ack=True, fail=False) is None  # only the original queue got it, once

        refused = admin(exchange, audit, "purge", f"{queue.name}.dlq", "--all")
        assert refused.returncode != 0 and "--reason" in refused.stderr  # no purge without a why
        purged = admin(exchange, audit, "purge", f"{queue.name}.dlq", "--all", "--operator", "bob",
                       "--reason", "upstream resent a corrected event")
        assert purged.returncode == 0, purged.stderr
        assert admin(exchange, audit, "list").stdout.strip() == "no dead letters"

        records = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [(r["action"], r["operator"], r["event_id"], r["why"]) for r in records] == [
            ("replay", "alice", crashed_id, None),
            ("purge", "bob", invalid_id, "upstream resent a corrected event"),
        ]
        assert "Marie Dupont" not in audit.read_text()
    finally:
        cleanup = await connection.channel()
        for name in (queue.name, f"{queue.name}.dlq"):
            await cleanup.queue_delete(name)
        for name in (exchange, f"{exchange}.dlx"):
            await cleanup.exchange_delete(name)
        await connection.close()
        await broker.stop()


async def test_a_dead_letter_whose_original_queue_is_gone_stays_on_the_dlq(tmp_path):
    """The default exchange returns a copy for a queue that does not exist (deleted, renamed) and the
    broker still confirms it: replay must see the return, keep the letter and say what to do."""
    exchange = f"dlqtest{uuid.uuid4().hex[:8]}"
    queue = topology.consumer_queue(exchange, "issuer", KEY).name  # its DLQ only: the queue itself is gone
    broker = RabbitBroker(AMQP_URL)
    await broker.connect()
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await topology.declare_dead_letter_queues(broker, exchange, [queue])
        channel = await connection.channel()
        dlx = await channel.get_exchange(f"{exchange}.dlx")
        ids = [str(uuid.uuid4()), str(uuid.uuid4())]
        for event_id in ids:
            await dlx.publish(aio_pika.Message(event("Marie Dupont"), message_id=event_id, headers={
                "x-rejected-reason": "unknown-convocation", "x-rejected-by": "issuer"}), routing_key=queue)
        audit = tmp_path / "dlq.jsonl"

        replayed = admin(exchange, audit, "replay", f"{queue}.dlq", "--all", "--operator", "alice")
        assert replayed.returncode != 0
        assert f"no queue {queue}" in replayed.stderr and "0 dead letter(s) replayed" in replayed.stderr
        assert "exists" in replayed.stderr and "the issuer, which declares it" in replayed.stderr  # what to do
        assert "Traceback" not in replayed.stderr

        listed = admin(exchange, audit, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert sorted(json.loads(line)["event_id"] for line in listed.stdout.splitlines()) == sorted(ids)
        assert not audit.exists() or audit.read_text() == ""  # nothing replayed, nothing recorded
    finally:
        cleanup = await connection.channel()
        await cleanup.queue_delete(f"{queue}.dlq")
        for name in (exchange, f"{exchange}.dlx"):
            await cleanup.exchange_delete(name)
        await connection.close()
        await broker.stop()
