"""Consuming events: validate at the edge, inbox + effect in one transaction, ack after commit.

- An event that fails its contract, or that a handler rejects with :class:`Rejected`, is published to
  the dead-letter exchange with a machine-readable reason in its headers and acknowledged: it is kept
  for inspection and never blocks the events behind it.
- A redelivered event whose id is already in the inbox is acknowledged and skipped.
- A failure while the database does not answer is an outage, not the event's fault: the message is
  kept (unacknowledged, so the prefetch stops intake) and retried once the database is back, so an
  outage never counts toward the queue's delivery limit.
- Any other failure (a bug) is requeued after a short pause; after ``DELIVERY_LIMIT`` deliveries the
  quorum queue dead-letters it (x-death reason ``delivery_limit``).
- A subscription whose handler acts only on its database may take :class:`Batches`: the deliveries that
  arrive while its previous transaction runs are claimed and handled together in one transaction, then
  acknowledged. If anything in it fails, it is rolled back and each event is handled alone as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

import asyncpg
import structlog
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage
from pydantic import ValidationError

from shared import crypto, rejections, topology, tracing
from shared.contracts import Envelope, EventPayload
from shared.logs import get_logger
from shared.memory import release_freed_memory
from shared.metrics import DEAD_LETTERED, EVENTS_CONSUMED, HANDLER_SECONDS, counted_after_commit
from shared.rejections import CONTRACT_REASONS, Rejected

log = get_logger(__name__)
P = TypeVar("P", bound=EventPayload)


@dataclass(frozen=True)
class LargeMessages:
    """At most ``at_once`` messages of ``min_bytes`` or more are decoded and handled at a time (the
    broker client runs a queue's messages concurrently, up to its prefetch)."""

    min_bytes: int
    at_once: int


@dataclass(frozen=True)
class Batches:
    """Handle up to ``at_most`` deliveries of a queue in one transaction: one inbox claim and one commit
    for all (per event they were most of a short handler's round trips and of the database's work).

    Only for a handler whose every effect is in its database: a batch that fails is rolled back and its
    events handled again one by one, so an e-mail or SMS sent from inside one would go out twice.

    - From idle, a batch is what arrives within ``linger`` seconds of its first event (which delays that
      event by as much: only for subscriptions off the patient's path); under load, what arrived while
      the previous batch ran. ``at_most`` should be at most half the queue's prefetch, or nothing can
      arrive while a batch holds the unacknowledged rest.
    - ``order``: the key the batch's events are handled in (stably: one key's events keep their order),
      the rows they lock, so that two replicas' batches lock them in the same order and never deadlock.
    - Retries, redeliveries (a message that failed may fail again and spoil every batch it joins) and
      large messages are handled alone."""

    at_most: int = 10
    linger: float = 0.0
    order: Callable[[Any], Any] | None = None  # given the event's payload


@dataclass(frozen=True)
class Delivery(Generic[P]):
    """What a handler receives: the validated envelope and how this copy arrived."""

    envelope: Envelope[P]
    attempt: int  # 0 for the first delivery, n for the n-th delayed retry
    queue: str

    @property
    def data(self) -> P:
        return self.envelope.data


Handler = Callable[[asyncpg.Connection, Delivery], Awaitable[None]]
ALONE = object()  # a batch's verdict on a message it leaves to be handled by itself


def _validation_detail(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)[:900]


def parse_envelope(payload_cls: type[P], body: bytes, routing_key: str) -> Envelope[P]:
    """Decode and validate a message body; raises Rejected with a reason code."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(rejections.MALFORMED_JSON, f"body is not JSON: {exc}") from None
    try:
        env = Envelope[payload_cls].model_validate(raw)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise Rejected(rejections.INVALID_EVENT, _validation_detail(exc)) from None
    if env.type != payload_cls.EVENT_TYPE or env.version != payload_cls.VERSION:
        raise Rejected(
            rejections.WRONG_TYPE, f"envelope says {env.type} v{env.version}, queue expects {payload_cls.routing_key()}"
        )
    # The broker lets only the producers' users publish this routing key; an envelope that names
    # someone else is forged or misconfigured, and acting on it would trust the wrong party.
    if env.producer not in (expected := topology.producers(payload_cls.routing_key())):
        raise Rejected(
            rejections.WRONG_PRODUCER,
            f"{env.type} is produced by {' or '.join(expected)} only, not {env.producer[:64]!r}",
        )
    return env


_ROUTING_KEY = re.compile(r"[a-z0-9._-]+")


def _begin_and_claim(event_id: uuid.UUID, routing_key: str) -> str:
    """``begin`` and the inbox claim in one round trip to the database (one socket write, not two:
    py-spy showed the services' largest cost in writes to the database). A multi-statement query
    takes no parameters, so the two values are written in: a UUID and a routing key of the BUS table,
    both checked to be nothing else."""
    if not isinstance(event_id, uuid.UUID) or not _ROUTING_KEY.fullmatch(routing_key):
        raise ValueError("an inbox claim takes a UUID and a routing key of shared/topology.py")
    return (
        f"begin; insert into inbox(event_id, routing_key) values ('{event_id}', '{routing_key}') on conflict do nothing"
    )


_CLAIM_MANY = (
    "insert into inbox(event_id, routing_key) select unnest($1::uuid[]), $2 on conflict do nothing returning event_id"
)


@contextlib.asynccontextmanager
async def _rolled_back_on_error(conn: asyncpg.Connection):
    """A transaction the caller began and commits: rolled back if anything inside raises."""
    try:
        yield
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            with contextlib.suppress(Exception):  # the error that matters is the one raised
                await conn.execute("rollback")
        raise


class _Batcher:
    """Collects a queue's deliveries while a batch runs and hands them to ``run`` together.

    ``run(messages)`` returns, for each message, None (done), :data:`ALONE` or the exception its
    consumer should raise. One batch runs at a time: under load the next one is what arrived meanwhile."""

    def __init__(self, run: Callable[[list[RabbitMessage]], Awaitable[list]], at_most: int, linger: float) -> None:
        self._run, self._at_most, self._linger = run, at_most, linger
        self._waiting: list[tuple[RabbitMessage, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def submit(self, msg: RabbitMessage) -> object:
        """None once the batch handled ``msg``, or :data:`ALONE`."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((msg, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            # From idle: the deliveries of the next ``linger`` seconds join this one (or those read with it).
            await asyncio.sleep(self._linger)
            while self._waiting:
                batch, self._waiting = self._waiting[: self._at_most], self._waiting[self._at_most :]
                try:
                    verdicts = await self._run([msg for msg, _ in batch])
                except BaseException as exc:  # never expected: run() decides per message
                    verdicts = [exc] * len(batch)
                for (_, future), verdict in zip(batch, verdicts, strict=True):
                    if future.done():
                        continue
                    if isinstance(verdict, BaseException):
                        future.set_exception(verdict)
                    else:
                        future.set_result(verdict)
        finally:
            self._task = None


async def _whole_message(msg):
    """Hand the handler the message itself and leave decoding to :func:`parse_envelope`.

    FastStream's JSON decoder would raise before the handler could dead-letter a malformed body
    with its reason; and with ``apply_types=False`` on the broker (see runtime.py) no dependency
    injection runs per message (it resolved the message argument in a thread pool: ~8 % of CPU)."""
    return msg


async def finish_despite_connection_loss(work: Awaitable[None]) -> None:
    """Run one message's handling to its end even if the broker connection drops meanwhile.

    The broker client cancels the tasks of a channel's consumers when its connection is lost. Cancelled
    between its effect (an e-mail handed to the relay, an SMS to the provider) and its commit, a handler
    would roll back the inbox row, and the redelivered message would do the effect a second time.
    Finished and committed, the redelivery is a duplicate the inbox skips; only the ack is lost."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            log.warning("broker connection lost during a handler; finishing it before letting go")
            with contextlib.suppress(Exception):
                await asyncio.wait([task])
        raise


class Consumer:
    """Registers a service's handlers on the broker and runs them with the inbox discipline."""

    def __init__(
        self,
        *,
        service: str,
        broker: RabbitBroker,
        exchange: str,
        pool_getter: Callable[[], asyncpg.Pool],
        outage_backoff_max: float = 5.0,
    ):
        self.service, self.broker, self.exchange = service, broker, exchange
        self.outage_backoff_max = outage_backoff_max
        self._pool = pool_getter
        self.queues: list[str] = []
        self._stopping = asyncio.Event()  # shutdown: events held through an outage are let go

    def subscribe(
        self,
        payload_cls: type[P],
        handler: Handler,
        *,
        idempotent_by_inbox: bool = True,
        prefetch: int | None = None,
        large: LargeMessages | None = None,
        batches: Batches | None = None,
    ) -> None:
        """``prefetch``: unacknowledged messages held for this queue (else the broker's default); the
        bodies wait in memory. ``large``: how many big messages are decoded and handled at once.
        ``batches``: handle the deliveries that arrive together in one transaction (see :class:`Batches`)."""
        routing_key = payload_cls.routing_key()
        if self.service not in topology.BUS[routing_key][1]:
            raise ValueError(f"{self.service} is not a consumer of {routing_key} in shared/topology.py BUS")
        queue = topology.consumer_queue(self.exchange, self.service, routing_key)
        self.queues.append(queue.name)
        event_type = payload_cls.EVENT_TYPE
        for outcome in ("processed", "error"):  # exported from the start: rate() sees the first error
            EVENTS_CONSUMED.labels(self.service, event_type, outcome)
        gate = asyncio.Semaphore(large.at_once) if large else None
        batcher = None
        if batches is not None:
            if not idempotent_by_inbox:
                raise ValueError("a batch claims its events in the inbox: batches need idempotent_by_inbox")

            async def run_batch(msgs: list[RabbitMessage]) -> list:
                return await self._consume_batch(msgs, payload_cls, handler, queue.name, event_type, batches.order)

            batcher = _Batcher(run_batch, batches.at_most, batches.linger)

        def batchable(msg: RabbitMessage) -> bool:
            headers = msg.headers or {}
            return (
                not int(headers.get("x-attempt", 0) or 0)
                and not msg.raw_message.redelivered
                and (large is None or len(msg.body) < large.min_bytes)
            )

        async def handle(msg: RabbitMessage) -> None:
            if payload_cls.MAX_BODY_BYTES is not None and len(msg.body) > payload_cls.MAX_BODY_BYTES:
                # Refused on its size alone, before a decoded or validated copy of it exists.
                await self._dead_letter(
                    msg,
                    queue.name,
                    event_type,
                    Rejected(
                        rejections.TOO_LARGE,
                        f"{len(msg.body)} bytes, more than the {payload_cls.MAX_BODY_BYTES} a "
                        f"{event_type} event may have",
                    ),
                )
                return
            if batcher is not None and batchable(msg) and await batcher.submit(msg) is not ALONE:
                return
            if gate is not None and large is not None and len(msg.body) >= large.min_bytes:
                async with gate:  # taken before decoding: a decoded letter is a few copies of its body
                    try:
                        await self._consume(msg, payload_cls, handler, queue.name, event_type, idempotent_by_inbox)
                    finally:
                        await release_freed_memory()
                return
            await self._consume(msg, payload_cls, handler, queue.name, event_type, idempotent_by_inbox)

        async def consume(msg: RabbitMessage) -> None:  # called with the message by _whole_message
            try:
                await finish_despite_connection_loss(handle(msg))
            except (Exception, asyncio.CancelledError) as exc:
                # Outside the handler: the ack, the nack or the dead-letter publish failed (a closed channel,
                # an unroutable DLX; aio-pika cancels the publish when the broker closes its channel), or
                # the message's headers could not be read.
                # FastStream logs nothing (no logger, shared/runtime.py): we do, and count it where the
                # consumer-errors alert looks; the message stays unacknowledged.
                current = asyncio.current_task()
                if isinstance(exc, asyncio.CancelledError) and current is not None and current.cancelling():
                    raise  # this task is being stopped (shutdown, connection lost): not the message's failure
                EVENTS_CONSUMED.labels(self.service, event_type, "error").inc()
                log.error(
                    "message handling failed outside the handler",
                    queue=queue.name,
                    event_id=msg.message_id,
                    correlation_id=msg.correlation_id,
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                )
                raise

        consume.__name__ = f"on_{event_type.replace('.', '_')}"
        self.broker.subscriber(
            queue,
            topology.events_exchange(self.exchange),
            ack_policy=AckPolicy.MANUAL,
            decoder=_whole_message,
            title=f"{self.service}:{routing_key}",
            channel=Channel(prefetch_count=prefetch, on_return_raises=True) if prefetch else None,
        )(consume)

    async def _consume(
        self, msg: RabbitMessage, payload_cls, handler: Handler, queue: str, event_type: str, by_inbox: bool
    ) -> None:
        with tracing.consuming(msg.headers, queue, event_type, msg.message_id):
            await self._consume_one(msg, payload_cls, handler, queue, event_type, by_inbox)

    async def _consume_one(
        self, msg: RabbitMessage, payload_cls, handler: Handler, queue: str, event_type: str, by_inbox: bool
    ) -> None:
        structlog.contextvars.clear_contextvars()
        headers = msg.headers or {}
        attempt = int(headers.get("x-attempt", 0) or 0)
        started = time.perf_counter()
        try:
            env = parse_envelope(payload_cls, msg.body, queue)
        except Rejected as exc:
            await self._dead_letter(msg, queue, event_type, exc)
            return
        structlog.contextvars.bind_contextvars(
            correlation_id=str(env.correlation_id), event_id=str(env.event_id), event_type=event_type
        )
        while True:
            try:
                if not await self._apply(msg, env, payload_cls, handler, queue, event_type, attempt, by_inbox):
                    return  # a duplicate, acknowledged
            except Rejected as exc:
                await self._dead_letter(msg, queue, event_type, exc)
                return
            except crypto.CannotOpen as exc:
                # A field sealed for us does not open: retrying cannot help; keep it for inspection.
                await self._dead_letter(msg, queue, event_type, Rejected(rejections.CANNOT_OPEN, str(exc)))
                return
            except Exception as exc:
                if not await self._database_reachable():
                    # An outage, not this event's fault: keep the message (returning it would count a
                    # delivery toward the queue's limit) and try again once the database answers.
                    EVENTS_CONSUMED.labels(self.service, event_type, "deferred").inc()
                    log.warning("database unreachable; holding the event until it is back", error=type(exc).__name__)
                    if await self._wait_for_database():
                        continue
                    # Shutting down: left unacknowledged, it returns to its queue for the next consumer.
                    log.info("shutting down; the event held through the outage returns to its queue")
                    return
                log.exception("handler failed; requeueing", error=type(exc).__name__)
                await asyncio.sleep(min(0.2 * (2 ** min(int(headers.get("x-delivery-count", 0) or 0), 4)), 3))
                await msg.nack(requeue=True)
                # Counted once returned (a failed nack is counted by consume(), not twice).
                EVENTS_CONSUMED.labels(self.service, event_type, "error").inc()
                return
            finally:
                HANDLER_SECONDS.labels(self.service, event_type).observe(time.perf_counter() - started)
            break
        await msg.ack()
        EVENTS_CONSUMED.labels(self.service, event_type, "processed").inc()

    async def _consume_batch(
        self,
        msgs: list[RabbitMessage],
        payload_cls,
        handler: Handler,
        queue: str,
        event_type: str,
        order: Callable[[Any], Any] | None,
    ) -> list:
        """Claim and handle ``msgs`` in one transaction, then acknowledge them. A message that is not a
        valid event, and every message of a batch that failed, is left to be handled alone (the usual
        path dead-letters, requeues or holds it through an outage)."""
        parsed: list[tuple[int, Envelope]] = []
        for i, msg in enumerate(msgs):
            with contextlib.suppress(Rejected):
                parsed.append((i, parse_envelope(payload_cls, msg.body, queue)))
        verdicts: list = [ALONE] * len(msgs)
        if len(parsed) < 2:
            return verdicts  # nothing to share
        if order is not None:
            parsed.sort(key=lambda item: order(item[1].data))
        started = time.perf_counter()
        duplicates: set[int] = set()
        try:
            with counted_after_commit():  # funnel and latency metrics count only what committed
                async with self._pool().acquire() as conn, _rolled_back_on_error(conn):
                    await conn.execute("begin")
                    fresh = {
                        row["event_id"]
                        for row in await conn.fetch(
                            _CLAIM_MANY, [env.event_id for _, env in parsed], payload_cls.routing_key()
                        )
                    }
                    for i, env in parsed:
                        if env.event_id not in fresh:
                            duplicates.add(i)
                            continue
                        fresh.discard(env.event_id)  # the same event twice in one batch: once
                        with (
                            structlog.contextvars.bound_contextvars(
                                correlation_id=str(env.correlation_id),
                                event_id=str(env.event_id),
                                event_type=event_type,
                            ),
                            tracing.consuming(msgs[i].headers, queue, event_type, str(env.event_id)),
                        ):
                            await handler(conn, Delivery(env, 0, queue))
                    await conn.execute("commit")
        except Exception as exc:
            log.warning(
                "batch failed; handling its events one by one",
                queue=queue,
                error=type(exc).__name__,
                event_ids=[str(env.event_id) for _, env in parsed],
            )
            return [ALONE] * len(msgs)
        # Each event's share of the batch's time: the histogram stays the cost of handling one event.
        share = (time.perf_counter() - started) / max(1, len(parsed) - len(duplicates))
        for i, _ in parsed:
            try:
                await msgs[i].ack()
            except Exception as exc:  # the consumer of this message logs and counts it
                verdicts[i] = exc
                continue
            if i in duplicates:
                log.info("duplicate event skipped", event_id=msgs[i].message_id)
                EVENTS_CONSUMED.labels(self.service, event_type, "duplicate").inc()
            else:
                HANDLER_SECONDS.labels(self.service, event_type).observe(share)
                EVENTS_CONSUMED.labels(self.service, event_type, "processed").inc()
            verdicts[i] = None
        return verdicts

    async def _apply(
        self,
        msg: RabbitMessage,
        env: Envelope,
        payload_cls,
        handler: Handler,
        queue: str,
        event_type: str,
        attempt: int,
        by_inbox: bool,
    ) -> bool:
        """Inbox claim and the handler in one transaction; False when the event was a duplicate."""
        with counted_after_commit():  # funnel and latency metrics count only what committed
            async with self._pool().acquire() as conn, _rolled_back_on_error(conn):
                # Delayed retries are the same event id on purpose: the handler's own state guards them.
                if by_inbox and attempt == 0:
                    if await conn.execute(_begin_and_claim(env.event_id, payload_cls.routing_key())) == "INSERT 0 0":
                        await conn.execute("rollback")
                        log.info("duplicate event skipped")
                        await msg.ack()
                        EVENTS_CONSUMED.labels(self.service, event_type, "duplicate").inc()
                        return False
                else:
                    await conn.execute("begin")
                await handler(conn, Delivery(env, attempt, queue))
                await conn.execute("commit")
        return True

    async def _database_reachable(self) -> bool:
        try:
            async with self._pool().acquire(timeout=5) as conn:
                await conn.fetchval("select 1", timeout=5)
            return True
        except Exception:  # any failure to answer is unreachable, whatever the driver calls it
            return False

    async def _wait_for_database(self) -> bool:
        """Back off (doubling, up to ``outage_backoff_max`` seconds) until the database answers (True), or
        until the process is shutting down (False)."""
        delay = 0.5
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return False
            if await self._database_reachable():
                log.info("database reachable again; resuming")
                return True
            delay = min(delay * 2, self.outage_backoff_max)

    def stop_holding(self) -> None:
        """Shutdown (shared/runtime.py ``begin_shutdown``): the events held through a database outage are
        let go, unacknowledged, so they return to their queue."""
        self._stopping.set()

    async def _dead_letter(self, msg: RabbitMessage, queue: str, event_type: str, exc: Rejected) -> None:
        """Park the untouched message on the DLQ with the reason in its headers, then ack it."""
        raw = msg.raw_message
        await self.broker.publish(
            msg.body,
            exchange=topology.dead_letter_exchange(self.exchange),
            routing_key=queue,
            message_id=msg.message_id or str(uuid.uuid4()),
            correlation_id=msg.correlation_id,
            content_type=raw.content_type,
            headers={
                **(msg.headers or {}),
                "x-rejected-reason": exc.reason,
                "x-rejected-detail": exc.detail,
                "x-rejected-by": self.service,
                "x-rejected-at": datetime.now(timezone.utc).isoformat(),  # the dead letter's age (dlq list)
                "x-original-routing-key": raw.routing_key or "",
            },
            persist=True,
            mandatory=True,
            timeout=10,
        )
        await msg.ack()
        DEAD_LETTERED.labels(self.service, queue, exc.reason).inc()
        outcome = "invalid" if exc.reason in CONTRACT_REASONS else "rejected"
        EVENTS_CONSUMED.labels(self.service, event_type, outcome).inc()
        log.warning("event dead-lettered", queue=queue, reason=exc.reason, detail=exc.detail)
