"""Transactional outbox: events are written in the caller's transaction and published by a relay.

The relay wakes on LISTEN/NOTIFY (sent by a trigger at commit) with a polling fallback, claims rows
with ``FOR UPDATE SKIP LOCKED`` so replicas can share the work, publishes each with a broker confirm
(persistent, mandatory: an unroutable event raises) and deletes it. A crash between the confirm and
the delete republishes the event; consumers' inboxes absorb the duplicate.

An event the broker refuses (returned as unroutable, or nacked) waits with a growing backoff (up to 60 s)
so that it does not hold back the events behind it. A broker that cannot be reached is no event's fault:
nothing is pushed back, the relay probes the broker every ``BROKER_PROBE_SECONDS`` and publishes
everything as soon as it answers (a five-minute outage once left a letter backed off for 50 s).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import asyncpg
from faststream.rabbit import RabbitBroker

from shared import tracing
from shared.contracts import Envelope
from shared.logs import get_logger
from shared.metrics import EVENTS_PUBLISHED, OUTBOX_LAST_SUCCESS, OUTBOX_OLDEST_AGE, OUTBOX_PENDING, RETRIES_SCHEDULED

log = get_logger(__name__)
# The backlog gauges are refreshed at most this often while the relay is busy, and at every idle wake-up
# (a query per pass was a tenth of a busy relay's round trips to the database).
BACKLOG_EVERY_SECONDS = 1.0
BROKER_PROBE_SECONDS = 1.0  # while the broker cannot be reached


def refused_by_broker(error: BaseException) -> bool:
    """The broker answered and refused this event (returned unroutable, or nacked): the event's own
    problem, worth a backoff. Anything else (connection lost, channel closed, timeout) is the broker's."""
    return isinstance(error, aio_pika.exceptions.DeliveryError)


def encode(env: Envelope) -> bytes:
    return env.model_dump_json().encode()


async def add_event(
    conn: asyncpg.Connection,
    env: Envelope,
    *,
    exchange: str | None = None,
    routing_key: str | None = None,
    headers: dict | None = None,
) -> uuid.UUID:
    """Record an event to publish once the caller's transaction commits."""
    await _insert(
        conn,
        [
            (
                env.event_id,
                exchange,
                routing_key or f"{env.type}.v{env.version}",
                env.type,
                env.correlation_id,
                encode(env),
                headers or {},
            )
        ],
    )
    return env.event_id


async def add_events(conn: asyncpg.Connection, envs: list[Envelope]) -> None:
    """Record several events (to the events exchange, by their type) in one statement, in their order:
    a handler that publishes two or three events pays one round trip to the database, not one each.
    The NOTIFY trigger runs once per statement, so the relay is woken once as well."""
    await _insert(
        conn,
        [
            (env.event_id, None, f"{env.type}.v{env.version}", env.type, env.correlation_id, encode(env), {})
            for env in envs
        ],
    )


_COLUMNS = ("event_id", "exchange", "routing_key", "event_type", "correlation_id", "body", "headers")


async def _insert(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    if not rows:
        return
    # The trace of the transaction that writes the events goes with them (shared/tracing.py); nothing
    # when tracing is off.
    if trace_headers := tracing.current_context_headers():
        rows = [(*row[:-1], {**row[-1], **trace_headers}) for row in rows]
    n = len(_COLUMNS)
    values = ", ".join("(" + ", ".join(f"${i * n + k}" for k in range(1, n + 1)) + ")" for i in range(len(rows)))
    await conn.execute(
        f"insert into outbox({', '.join(_COLUMNS)}) values {values}", *(value for row in rows for value in row)
    )


class OutboxRelay:
    """Publishes a service's outbox rows; one task per process, several processes may share a schema."""

    def __init__(
        self,
        *,
        service: str,
        schema: str,
        pool: asyncpg.Pool,
        dsn: str,
        broker: RabbitBroker,
        exchange: str,
        poll_seconds: float = 1.0,
        batch: int = 50,
        batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.service, self.schema, self.pool, self.dsn = service, schema, pool, dsn
        self.broker, self.exchange = broker, exchange
        self.poll_seconds, self.batch, self.batch_bytes = poll_seconds, batch, batch_bytes
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listener: asyncpg.Connection | None = None
        self._stopping = False
        self._publish_failed = False
        self._broker_unreachable = False
        self._more = False  # the last batch was cut short: rows may be waiting behind it
        self._backlog_at = float("-inf")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-outbox-relay")

    async def stop(self, within: float = 10) -> None:
        """Publish what was committed, for up to ``within`` seconds; rows left wait for the next relay."""
        self._stopping = True
        self._wake.set()
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout=within)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self._listener and not self._listener.is_closed():
            try:
                await self._listener.close(timeout=1)
            except Exception:  # the database is away: drop the socket
                self._listener.terminate()

    async def _listen(self) -> None:
        """A dedicated connection (not from the pool) for NOTIFY; if it dies, polling covers the gap."""
        try:
            if self._listener is None or self._listener.is_closed():
                self._listener = await asyncpg.connect(self.dsn)
                await self._listener.add_listener(f"{self.schema}_outbox", lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("outbox listener unavailable, polling", error=type(exc).__name__)
            self._listener = None

    async def _run(self) -> None:
        idle = True
        while not self._stopping:
            await self._listen()
            # Cleared before the pass: a commit notified during the pass wakes the next one at once.
            self._wake.clear()
            self._publish_failed = False
            if self._broker_unreachable:
                await self._wait_for_broker()
            try:
                # Another batch only when this one was cut short: a batch that took every due row
                # leaves nothing behind (rows committed meanwhile have notified the next wake-up).
                while await self.relay_once() and self._more and not self._stopping:
                    pass
                if idle or time.monotonic() - self._backlog_at >= BACKLOG_EVERY_SECONDS:
                    await self._record_backlog()
                if not self._publish_failed:
                    # Liveness: the backlog gauges keep their last value when the relay stops or
                    # cannot publish; this timestamp then falls behind and the alert sees it.
                    OUTBOX_LAST_SUCCESS.labels(self.service).set_to_current_time()
            except Exception:  # the relay must outlive any single failure; the next wake retries
                log.exception("outbox relay pass failed")
            try:
                # No waiting for more commits after a wake-up: under load, those committed during a
                # pass go together in the next one anyway (3 ms of waiting per hop gained no throughput).
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                idle = False
            except TimeoutError:
                idle = True
        # Drain what was committed before shutdown.
        try:
            while await self.relay_once():
                pass
        except Exception:
            log.exception("outbox drain at shutdown failed")

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        self._more = False
        # A batch holds up to ``batch_bytes`` of bodies (at least one row), so a few 13 MB sealed
        # letters are never all in memory at once; the other locked rows go next round. Bodies small
        # enough that a whole batch of them fits come with the first query (one round trip, not two).
        small = self.batch_bytes // self.batch
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(
                "select id, event_id, exchange, routing_key, event_type, correlation_id, headers,"
                " octet_length(body) as size, case when octet_length(body) <= $2 then body end as body"
                " from outbox where next_attempt_at <= now() order by id limit $1 for update skip locked",
                self.batch,
                small,
            )
            if not claimed:
                return 0
            rows: list = []
            total = 0
            for row in claimed:
                if rows and total + row["size"] > self.batch_bytes:
                    break
                rows.append(row)
                total += row["size"]
            self._more = len(rows) < len(claimed) or len(claimed) == self.batch
            if any(row["body"] is None for row in rows):
                bodies = {
                    r["id"]: r["body"]
                    for r in await conn.fetch(
                        "select id, body from outbox where id = any($1::bigint[])",
                        [row["id"] for row in rows if row["body"] is None],
                    )
                }
                rows = [{**row, "body": bodies[row["id"]]} if row["body"] is None else row for row in rows]
            results = await asyncio.gather(*(self._publish(r) for r in rows), return_exceptions=True)
            done = [r["id"] for r, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)]
            for row, res in zip(rows, results, strict=True):
                if isinstance(res, BaseException):
                    self._publish_failed = True
                    log.error("outbox publish failed", event_id=str(row["event_id"]), error=repr(res)[:300])
                    if refused_by_broker(res):
                        backoff = "least(60, 2 ^ attempts)"
                    else:  # not the event's fault: due again as soon as the broker answers
                        backoff, self._broker_unreachable = "0", True
                    await conn.execute(
                        "update outbox set attempts = attempts + 1, last_error = $2,"
                        f" next_attempt_at = now() + make_interval(secs => {backoff}) where id = $1",
                        row["id"],
                        repr(res)[:500],
                    )
            if done:
                await conn.execute("delete from outbox where id = any($1::bigint[])", done)
            for row, res in zip(rows, results, strict=True):
                if not isinstance(res, BaseException):
                    # A delayed retry is the same event again: counting it as published would inflate
                    # every "events of type X" figure by the number of SMTP/SMS retries.
                    counter = RETRIES_SCHEDULED if "x-attempt" in (row["headers"] or {}) else EVENTS_PUBLISHED
                    counter.labels(self.service, row["event_type"]).inc()
            return len(done)

    async def _wait_for_broker(self) -> None:
        """Probe the broker every BROKER_PROBE_SECONDS until it answers (or the relay stops): the passes
        in between would only fail again."""
        while not self._stopping:
            try:
                if await asyncio.wait_for(self.broker.ping(timeout=BROKER_PROBE_SECONDS), BROKER_PROBE_SECONDS * 2):
                    break
            except Exception:  # noqa: S110 - unreachable is what is being waited out
                pass
            await asyncio.sleep(BROKER_PROBE_SECONDS)
        self._broker_unreachable = False

    async def _publish(self, row: asyncpg.Record) -> None:
        # jsonb, decoded by the pool's codec (shared/db.py); its trace context continued by the publish span.
        with tracing.publishing(row["headers"], row["routing_key"], row["event_type"], str(row["event_id"])) as headers:
            await self.broker.publish(
                bytes(row["body"]),
                exchange=row["exchange"] if row["exchange"] is not None else self.exchange,
                routing_key=row["routing_key"],
                message_id=str(row["event_id"]),
                correlation_id=str(row["correlation_id"]),
                message_type=row["event_type"],
                content_type="application/json",
                headers={"x-producer": self.service, **headers},
                persist=True,
                mandatory=True,
                timeout=10,
            )

    async def _record_backlog(self) -> None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("select count(*) as n, min(created_at) as oldest from outbox")
        self._backlog_at = time.monotonic()
        OUTBOX_PENDING.labels(self.service).set(row["n"])
        age = 0.0
        if row["oldest"] is not None:
            age = max(0.0, time.time() - row["oldest"].timestamp())
        OUTBOX_OLDEST_AGE.labels(self.service).set(age)
