"""Dead-letter operations: list, show, replay, purge and migrate the consumer queues' DLQs.

Looking changes nothing. The DLQs are classic queues (shared/topology.py), which have no delivery limit
and count no delivery: a message is taken unacknowledged, described, and handed back when its channel
closes, in its place. Messages are read one at a time and only a description is kept (event id, type,
reason), never a body: a queue of letters with their PDFs is never in memory at once.

Nothing is removed except by ``replay`` (once the copy on the original queue is confirmed, and not
returned as unroutable) and ``purge``, each recorded first in the database (``operations.dlq_action``:
who, what, why; append-only). A DLQ of an earlier release (a quorum queue, where each look counted a
delivery towards its limit) is not browsed: ``migrate`` moves it to the classic shape first.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared import topology

# Headers added on the way to the DLQ: a replayed copy starts afresh without them.
DEAD_LETTER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    "x-rejected-reason",
    "x-rejected-detail",
    "x-rejected-by",
    "x-rejected-at",
)
MIGRATING = ".migrating"  # where a DLQ's letters wait while it is declared again in its new shape


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
    letter after it. ``replayed`` (confirmed, recorded and acknowledged before it) stay replayed."""

    def __init__(self, letter: DeadLetter, replayed: list[DeadLetter], problem: str, advice: str) -> None:
        super().__init__(problem)
        self.letter, self.replayed, self.problem, self.advice = letter, replayed, problem, advice


class EarlierShape(Exception):
    """The DLQ is a quorum queue of an earlier release: looking at it would count deliveries."""


def dead_letter_queues(exchange: str) -> list[str]:
    """Every consumer queue's DLQ, the hospital's own queues included (derived from the bus table), and
    the DLQs of retired queues, which their service keeps while they hold dead letters."""
    current = [
        f"{topology.queue_name(exchange, consumer, key)}.dlq"
        for key, (_, consumers) in topology.BUS.items()
        for consumer in consumers
    ]
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
    detail = headers.get("x-rejected-detail") or (
        f"after {first.get('count', '?')} deliveries from {first.get('queue', '?')}" if first else ""
    )
    at = _as_time(headers.get("x-rejected-at")) or _as_time(first.get("time")) or _as_time(message.timestamp)
    return DeadLetter(
        queue, message.message_id or "", message.type or _event_type(message.body), str(reason), str(detail), at
    )


def _event_type(body: bytes) -> str:
    # Only the start of the body: the type comes before the data in our envelopes, and a letter's PDF is
    # never decoded to learn it.
    head = body[:4096].decode(errors="replace")
    marker = head.find('"type"')
    if marker < 0:
        return "?"
    try:
        return str(json.loads("{" + head[marker:].split(",", 1)[0] + "}")["type"])
    except (ValueError, KeyError):
        return "?"


class DeadLetterOffice:
    """One connection to the broker, one to the database for the record (opened when first needed)."""

    def __init__(self, amqp_url: str, exchange: str, database_url: str, operator: str) -> None:
        self.amqp_url, self.exchange, self.database_url, self.operator = amqp_url, exchange, database_url, operator
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.db: asyncpg.Connection | None = None

    @property
    def conn(self) -> aio_pika.abc.AbstractConnection:
        assert self.connection is not None, "use DeadLetterOffice as an async context manager"
        return self.connection

    async def __aenter__(self) -> DeadLetterOffice:
        self.connection = await aio_pika.connect(self.amqp_url)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.connection:
            await self.connection.close()
        if self.db is not None:
            await self.db.close()

    # --- reading ------------------------------------------------------------------------------

    async def depths(self, only: str | None = None) -> dict[str, int]:
        """Depth of every DLQ that exists (or of ``only``)."""
        depths: dict[str, int] = {}
        for name in [only] if only else dead_letter_queues(self.exchange):
            async with self._channel() as channel:
                try:
                    declared = await channel.declare_queue(name, passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    if only:
                        raise SystemExit(f"no such queue: {name}") from None
                    continue
                depths[name] = declared.declaration_result.message_count or 0
        return depths

    async def earlier_shape(self, queues: list[str]) -> list[str]:
        """Which of these existing DLQs are still quorum queues (an earlier release's)."""
        return await topology.earlier_dead_letter_queues(self.amqp_url, queues) if queues else []

    @contextlib.asynccontextmanager
    async def _channel(self, **kw) -> AsyncIterator[AbstractChannel]:
        """A channel of its own: closing it hands back what it took unacknowledged; a missing queue closes it."""
        channel = await self.conn.channel(**kw)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _browse(self, channel: AbstractChannel, queue: str) -> AsyncIterator[AbstractIncomingMessage]:
        """Each message of the queue once, unacknowledged: one at a time, handed back when the channel
        closes unless the caller acknowledges it. Refuses a DLQ of the earlier, delivery-counting shape."""
        if await self.earlier_shape([queue]):
            raise EarlierShape(queue)
        q = await channel.get_queue(queue, ensure=False)
        while (message := await q.get(no_ack=False, fail=False)) is not None:
            yield message

    async def letters(self, only: str | None = None) -> AsyncIterator[DeadLetter]:
        """Every dead letter, described as it is read (nothing else is kept)."""
        depths = await self.depths(only)
        earlier = await self.earlier_shape(list(depths))
        if only in earlier:
            raise EarlierShape(only)
        for queue, depth in depths.items():
            if depth == 0 or queue in earlier:
                continue
            async with self._channel() as channel:
                async for message in self._browse(channel, queue):
                    yield describe(queue, message)

    async def show(self, queue: str, event_id: str) -> tuple[DeadLetter, dict]:
        async with self._channel() as channel:
            async for message in self._browse(channel, queue):
                if message.message_id == event_id:
                    return describe(queue, message), _outline(message)
        raise SystemExit(f"no dead letter {event_id} in {queue}")

    # --- acting -------------------------------------------------------------------------------

    async def replay(self, queue: str, event_ids: set[str] | None) -> list[DeadLetter]:
        """Publish the chosen dead letters (all when ``event_ids`` is None) back to their original queue,
        one at a time: each is recorded and acknowledged on the DLQ only once the broker confirmed its copy.
        A copy the broker returns (the original queue does not exist: deleted, renamed) is confirmed all the
        same, so the channel raises on returns: that letter and the rest stay on the DLQ and
        ``ReplayStopped`` says why."""
        if queue in retired_dead_letter_queues(self.exchange):
            raise SystemExit(f"{queue} is a retired queue's: nothing consumes these events any more; purge them")
        await self._database()
        done: list[DeadLetter] = []
        async with self._channel(publisher_confirms=True, on_return_raises=True) as channel:
            async for message in self._browse(channel, queue):
                if event_ids is not None and message.message_id not in event_ids:
                    continue
                letter = describe(queue, message)
                try:
                    # The default exchange delivers to exactly the original queue, not to every consumer of
                    # the routing key: the other consumers already have their copy.
                    await channel.default_exchange.publish(
                        _copy(message), routing_key=letter.original_queue, mandatory=True
                    )
                except aio_pika.exceptions.PublishError:  # returned: no queue by that name
                    service = declared_by(self.exchange, letter.original_queue)
                    who = f"the {service}, which declares it at startup," if service else "the service that declares it"
                    raise ReplayStopped(
                        letter,
                        done,
                        f"no queue {letter.original_queue} to take it back (deleted, renamed, or not declared yet)",
                        f"check that {letter.original_queue} "
                        f"exists (rabbitmqctl list_queues name) and that {who} is running, then "
                        "replay again",
                    ) from None
                except aio_pika.exceptions.DeliveryError:  # nacked: the queue refused it (full, ...)
                    raise ReplayStopped(
                        letter,
                        done,
                        f"{letter.original_queue} refused it (nack)",
                        "look for a broker alarm or a queue length limit, then replay again",
                    ) from None
                await self._record("replay", letter, why=None)
                await message.ack()
                done.append(letter)
        return done

    async def purge(self, queue: str, event_ids: set[str] | None, why: str) -> list[DeadLetter]:
        """Remove the chosen dead letters for good, each recorded (who, why, what) before it goes."""
        await self._database()
        done = []
        async with self._channel() as channel:
            async for message in self._browse(channel, queue):
                if event_ids is not None and message.message_id not in event_ids:
                    continue
                letter = describe(queue, message)
                await self._record("purge", letter, why=why)
                await message.ack()
                done.append(letter)
        return done

    async def migrate(self, queue: str) -> int:
        """Move a DLQ of an earlier release (a quorum queue) to its classic shape, losing nothing; returns how
        many letters it held. Its letters wait in ``<queue>.migrating``, bound in its place on the DLX, while
        the DLQ is deleted and declared again; then they move back. A letter dead-lettered while both are
        bound may end up twice in the DLQ: replaying both is harmless (the consumer's inbox applies it once)."""
        await self._database()
        original = queue.removesuffix(".dlq")
        holding = queue + MIGRATING
        dlx = topology.dead_letter_exchange(self.exchange).name
        async with self._channel(publisher_confirms=True) as channel:
            moved = await _take_over(channel, dlx, original, holding, queue)
        # A new channel: RabbitMQ 3.10 closes the connection (INTERNAL_ERROR) on a publish to a queue declared
        # again under the name of one deleted on the same channel.
        async with self._channel(publisher_confirms=True) as channel:
            back = await _take_over(channel, dlx, original, queue, holding)
        await self._record_migration(queue, moved, back)
        return back

    async def _database(self) -> asyncpg.Connection:
        """The record comes first: no replay or purge without it."""
        if self.db is None:
            try:
                self.db = await asyncpg.connect(self.database_url, timeout=10)
            except (OSError, asyncpg.PostgresError) as exc:
                raise SystemExit(
                    f"cannot reach the operations database to record what is done "
                    f"({type(exc).__name__}): nothing was changed; check OPERATIONS_DATABASE_URL"
                ) from None
        return self.db

    async def _record(self, action: str, letter: DeadLetter, *, why: str | None) -> None:
        db = await self._database()
        await db.execute(
            "insert into operations.dlq_action(operator, action, why, queue, event_id, event_type,"
            " dead_letter_reason) values ($1, $2, $3, $4, $5, $6, $7)",
            self.operator,
            action,
            why,
            letter.queue,
            letter.event_id,
            letter.event_type,
            letter.reason,
        )

    async def _record_migration(self, queue: str, moved: int, back: int) -> None:
        db = await self._database()
        await db.execute(
            "insert into operations.dlq_action(operator, action, queue, detail) values ($1, $2, $3, $4)",
            self.operator,
            "migrate",
            queue,
            f"quorum to classic: {moved} letter(s) moved out, {back} moved back",
        )


def _copy(message: AbstractIncomingMessage, *, keep_dead_letter_headers: bool = False) -> aio_pika.Message:
    headers = {
        k: v for k, v in (message.headers or {}).items() if keep_dead_letter_headers or k not in DEAD_LETTER_HEADERS
    }
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def _take_over(channel: AbstractChannel, dlx: str, routing_key: str, new: str, old: str) -> int:
    """Make ``new`` (declared classic) the DLQ bound for ``routing_key`` in place of ``old``, move every letter
    of ``old`` into it (those dead-lettered before the unbinding took effect too) and delete ``old``."""
    await (await channel.declare_queue(new, durable=True, arguments=topology.DEAD_LETTER_QUEUE_ARGUMENTS)).bind(
        dlx, routing_key=routing_key
    )
    await (await channel.get_queue(old, ensure=False)).unbind(dlx, routing_key=routing_key)
    moved = await _move(channel, old, new)
    while (await channel.declare_queue(old, passive=True)).declaration_result.message_count:
        moved += await _move(channel, old, new)
    await channel.queue_delete(old)
    return moved


async def _move(channel: AbstractChannel, source: str, target: str) -> int:
    """Every message of ``source`` to ``target`` unchanged (headers included), one at a time: each is
    acknowledged on ``source`` only once ``target`` confirmed its copy. Returns how many."""
    q = await channel.get_queue(source, ensure=False)
    moved = 0
    while (message := await q.get(no_ack=False, fail=False)) is not None:
        await channel.default_exchange.publish(
            _copy(message, keep_dead_letter_headers=True), routing_key=target, mandatory=True
        )
        await message.ack()
        moved += 1
    return moved


def _outline(message: AbstractIncomingMessage) -> dict:
    """The envelope without its data values (patient data): which fields it carries and their sizes."""
    outline: dict = {
        "properties": {
            "message_id": message.message_id,
            "correlation_id": message.correlation_id,
            "type": message.type,
            "content_type": message.content_type,
            "body_bytes": len(message.body),
        },
        "headers": {k: _plain(v) for k, v in (message.headers or {}).items()},
    }
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
