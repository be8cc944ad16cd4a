"""Dead-letter operations: list, show, replay and purge what waits in the consumer queues' DLQs.

Reading a DLQ takes its messages unacknowledged and hands them back (a closed channel requeues them):
nothing is removed except by ``replay`` (after the copy on the original queue is confirmed, and not
returned as unroutable) and ``purge`` (after the audit record is written). Bodies hold patient data and
are never printed.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared import topology

# Headers added on the way to the DLQ: a replayed copy starts afresh without them.
DEAD_LETTER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                       "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
                       "x-rejected-reason", "x-rejected-detail", "x-rejected-by", "x-rejected-at")


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # the DLQ
    event_id: str
    event_type: str
    reason: str  # the consumer's x-rejected-reason, or the broker's x-death reason (delivery_limit, ...)
    detail: str
    dead_lettered_at: datetime | None

    @property
    def original_queue(self) -> str:
        return self.queue.removesuffix(".dlq")

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.dead_lettered_at is None else max(0.0, (now - self.dead_lettered_at).total_seconds())


class ReplayStopped(Exception):
    """Replay stopped at ``letter``: the broker did not take its copy, so it stays on the DLQ with every
    letter after it. ``replayed`` (confirmed, acknowledged and recorded before it) stay replayed."""

    def __init__(self, letter: DeadLetter, replayed: list[DeadLetter], problem: str, advice: str) -> None:
        super().__init__(problem)
        self.letter, self.replayed, self.problem, self.advice = letter, replayed, problem, advice


def dead_letter_queues(exchange: str) -> list[str]:
    """Every consumer queue's DLQ, the hospital's own queues included (derived from the bus table), and
    the DLQs of retired queues, which their service keeps while they hold dead letters."""
    current = [f"{topology.queue_name(exchange, consumer, key)}.dlq"
               for key, (_, consumers) in topology.BUS.items() for consumer in consumers]
    return current + retired_dead_letter_queues(exchange)


def retired_dead_letter_queues(exchange: str) -> list[str]:
    return [f"{queue}.dlq" for consumer in topology.RETIRED for queue in topology.retired_queues(exchange, consumer)]


def declared_by(exchange: str, queue: str) -> str | None:
    """The service that declares a consumer queue at its startup (an outside party's, by one of ours)."""
    for key, (_, consumers) in topology.BUS.items():
        for consumer in consumers:
            if topology.queue_name(exchange, consumer, key) == queue:
                return topology.OUTBOUND_DECLARED_BY.get(consumer, consumer)
    return None


def _as_time(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def describe(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    deaths = headers.get("x-death") or []
    first: dict[str, Any] = deaths[-1] if deaths else {}  # x-death is newest first
    reason = headers.get("x-rejected-reason") or first.get("reason") or "unknown"
    detail = headers.get("x-rejected-detail") or (f"after {first.get('count', '?')} deliveries from "
                                                  f"{first.get('queue', '?')}" if first else "")
    at = _as_time(headers.get("x-rejected-at")) or _as_time(first.get("time")) or _as_time(message.timestamp)
    return DeadLetter(queue, message.message_id or "", message.type or _event_type(message.body), str(reason),
                      str(detail), at)


def _event_type(body: bytes) -> str:
    try:
        return str(json.loads(body).get("type", "?"))
    except (ValueError, AttributeError):
        return "?"


class DeadLetterOffice:
    """One connection to the broker; every read is a peek unless the caller acknowledges."""

    def __init__(self, amqp_url: str, exchange: str, audit_log: Path, operator: str) -> None:
        self.amqp_url, self.exchange, self.audit_log, self.operator = amqp_url, exchange, audit_log, operator
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None

    @property
    def conn(self) -> aio_pika.abc.AbstractRobustConnection:
        assert self.connection is not None, "use DeadLetterOffice as an async context manager"
        return self.connection

    async def __aenter__(self) -> DeadLetterOffice:
        self.connection = await aio_pika.connect_robust(self.amqp_url)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.connection:
            await self.connection.close()

    async def _take_all(self, channel: aio_pika.abc.AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
        """Every message of the queue, unacknowledged (returned to it when the channel closes)."""
        q = await channel.get_queue(queue, ensure=False)
        taken: list[AbstractIncomingMessage] = []
        while (message := await q.get(no_ack=False, fail=False)) is not None:
            taken.append(message)
        return taken

    async def queues(self, only: str | None = None) -> dict[str, int]:
        """Depth of every DLQ that exists (or of ``only``)."""
        depths: dict[str, int] = {}
        for name in [only] if only else dead_letter_queues(self.exchange):
            channel = await self.conn.channel()  # a missing queue closes the channel
            try:
                declared = await channel.declare_queue(name, passive=True)
                depths[name] = declared.declaration_result.message_count or 0
            except aio_pika.exceptions.ChannelClosed:
                if only:
                    raise SystemExit(f"no such queue: {name}") from None
            finally:
                if not channel.is_closed:
                    await channel.close()
        return depths

    async def letters(self, only: str | None = None) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        for queue, depth in (await self.queues(only)).items():
            if depth == 0:
                continue
            async with self.conn.channel() as channel:
                letters += [describe(queue, m) for m in await self._take_all(channel, queue)]
        return letters

    async def show(self, queue: str, event_id: str) -> tuple[DeadLetter, dict]:
        async with self.conn.channel() as channel:
            for message in await self._take_all(channel, queue):
                if message.message_id == event_id:
                    return describe(queue, message), _outline(message)
        raise SystemExit(f"no dead letter {event_id} in {queue}")

    async def replay(self, queue: str, event_ids: set[str] | None) -> list[DeadLetter]:
        """Publish the chosen dead letters (all when ``event_ids`` is None) back to their original queue,
        each acknowledged on the DLQ only once the broker confirmed its copy. A copy the broker returns
        (the original queue does not exist: deleted, renamed) is confirmed all the same, so the channel
        raises on returns: that letter and the rest stay on the DLQ and ``ReplayStopped`` says why."""
        if queue in retired_dead_letter_queues(self.exchange):
            raise SystemExit(f"{queue} is a retired queue's: nothing consumes these events any more; purge them")
        done: list[DeadLetter] = []
        async with self.conn.channel(publisher_confirms=True, on_return_raises=True) as channel:
            for message in await self._take_all(channel, queue):
                if event_ids is not None and message.message_id not in event_ids:
                    continue
                letter = describe(queue, message)
                headers = {k: v for k, v in (message.headers or {}).items() if k not in DEAD_LETTER_HEADERS}
                # The default exchange delivers to exactly the original queue, not to every consumer of
                # the routing key: the other consumers already have their copy.
                try:
                    await channel.default_exchange.publish(
                        aio_pika.Message(message.body, headers=headers, content_type=message.content_type,
                                         message_id=message.message_id, correlation_id=message.correlation_id,
                                         type=message.type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=letter.original_queue, mandatory=True,
                    )
                except aio_pika.exceptions.PublishError:  # returned: no queue by that name
                    service = declared_by(self.exchange, letter.original_queue)
                    who = f"the {service}, which declares it at startup," if service else "the service that declares it"
                    raise ReplayStopped(letter, done, f"no queue {letter.original_queue} to take it back (deleted, "
                                        "renamed, or not declared yet)", f"check that {letter.original_queue} "
                                        f"exists (rabbitmqctl list_queues name) and that {who} is running, then "
                                        "replay again") from None
                except aio_pika.exceptions.DeliveryError:  # nacked: the queue refused it (full, ...)
                    raise ReplayStopped(letter, done, f"{letter.original_queue} refused it (nack)",
                                        "look for a broker alarm or a queue length limit, then replay "
                                        "again") from None
                self._record("replay", letter, why=None)
                await message.ack()
                done.append(letter)
        return done

    async def purge(self, queue: str, event_ids: set[str] | None, why: str) -> list[DeadLetter]:
        """Remove the chosen dead letters for good, each recorded (who, why, what) before it goes."""
        done = []
        async with self.conn.channel() as channel:
            for message in await self._take_all(channel, queue):
                if event_ids is not None and message.message_id not in event_ids:
                    continue
                letter = describe(queue, message)
                self._record("purge", letter, why=why)
                await message.ack()
                done.append(letter)
        return done

    def _record(self, action: str, letter: DeadLetter, *, why: str | None) -> None:
        """Append one line to the audit log, flushed to disk before the message is acknowledged."""
        entry = {"at": datetime.now(timezone.utc).isoformat(), "action": action, "operator": self.operator,
                 "why": why, "queue": letter.queue, "event_id": letter.event_id, "event_type": letter.event_type,
                 "reason": letter.reason}
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        with self.audit_log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _outline(message: AbstractIncomingMessage) -> dict:
    """The envelope without its data values (patient data): which fields it carries and their sizes."""
    outline: dict = {"properties": {"message_id": message.message_id, "correlation_id": message.correlation_id,
                                    "type": message.type, "content_type": message.content_type,
                                    "body_bytes": len(message.body)},
                     "headers": {k: _plain(v) for k, v in (message.headers or {}).items()}}
    try:
        envelope = json.loads(message.body)
        data = envelope.pop("data", None)
        outline["envelope"] = {k: v for k, v in envelope.items() if not isinstance(v, (dict, list))}
        if isinstance(data, dict):
            outline["data_fields"] = {k: type(v).__name__ for k, v in data.items()}
    except (ValueError, AttributeError):
        outline["envelope"] = "not JSON"
    return outline


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def default_operator() -> str:
    return os.environ.get("CONVOCATIONS_OPERATOR") or getpass.getuser()
