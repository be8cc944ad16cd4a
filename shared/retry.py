"""Delayed retries through holding queues (TTL, then dead-lettered back to the consumer's queue).

A handler that meets a transient failure records its attempt and calls :func:`schedule_retry` in
the same transaction: the retry copy goes out through the outbox, so it is never lost and never
blocks the consumer. Delays are capped; after the last one the handler declares a final failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from faststream.rabbit import RabbitBroker

from shared import topology
from shared.consumer import Delivery
from shared.outbox import add_event


@dataclass(frozen=True)
class RetryPolicy:
    delays: tuple[int, ...] = (5, 30, 120, 600, 1800)  # seconds: capped exponential backoff

    @classmethod
    def parse(cls, text: str) -> RetryPolicy:
        return cls(tuple(int(x) for x in text.split(",") if x.strip()))

    def delay_for(self, attempt: int) -> int | None:
        """Delay before retry number ``attempt`` (1-based), or None when retries are exhausted."""
        return self.delays[attempt - 1] if 1 <= attempt <= len(self.delays) else None

    async def declare(self, broker: RabbitBroker, exchange: str, queues: list[str]) -> None:
        for queue in queues:
            for delay in set(self.delays):
                await topology.declare_retry_queue(broker, exchange, queue, delay)


async def schedule_retry(conn: asyncpg.Connection, d: Delivery, *, exchange: str, attempt: int, delay: int) -> None:
    """Send this same event back to its queue after ``delay`` seconds, as attempt ``attempt``."""
    await add_event(
        conn,
        d.envelope,
        exchange=topology.retry_exchange(exchange).name,
        routing_key=f"{d.queue}.retry.{delay}s",
        headers={"x-attempt": attempt},
    )
