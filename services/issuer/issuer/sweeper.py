"""The issuer's clock: reminders, paper fallback for letters not downloaded in time, message expiry, and
the gauges of what is overdue (paper letters, requests the hospital system has not answered).

Runs in every replica (``Runtime.every``); ``FOR UPDATE SKIP LOCKED`` lets replicas share the rows
without doubles.
"""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg
import structlog

from issuer import domain, store
from issuer.handlers import PAPER_GRACE_SECONDS, IssuerHandlers
from issuer.metrics import REISSUE_OLDEST_WAITING, REISSUES_WAITING
from shared.logs import get_logger
from shared.metrics import PAPER_OVERDUE, counted_after_commit

log = get_logger(__name__)


class Sweeper:
    def __init__(self, handlers: IssuerHandlers, pool_getter) -> None:
        self.handlers, self._pool = handlers, pool_getter

    async def sweep_once(self, now: datetime | None = None) -> int:
        now = now or datetime.now(timezone.utc)
        pool: asyncpg.Pool = self._pool()
        done = 0
        hours = self.handlers.settings.postal_fallback_hours
        with counted_after_commit():
            async with pool.acquire() as conn, conn.transaction():
                for row in await store.due_for_expiry(conn, now):
                    with structlog.contextvars.bound_contextvars(correlation_id=str(row["id"])):
                        await self.handlers.expire(conn, row, now)
                    done += 1
        settings = self.handlers.settings
        if settings.reminder_days > 0:
            async with pool.acquire() as conn, conn.transaction():
                for row in await store.due_for_reminder(conn, now, hours, settings.reminder_days):
                    if domain.reminder_due(
                        appointment_at=row["appointment_at"],
                        sealed_at=row["sealed_at"],
                        now=now,
                        fallback_hours=hours,
                        reminder_days=settings.reminder_days,
                    ):
                        with structlog.contextvars.bound_contextvars(correlation_id=str(row["id"])):
                            await self.handlers.remind(conn, row, now)
                        done += 1
        with counted_after_commit():
            async with pool.acquire() as conn, conn.transaction():
                for row in await store.due_for_fallback(conn, now, hours):
                    if domain.fallback_due(
                        appointment_at=row["appointment_at"], sealed_at=row["sealed_at"], now=now, fallback_hours=hours
                    ):
                        with structlog.contextvars.bound_contextvars(correlation_id=str(row["id"])):
                            await self.handlers.post_fallback(conn, row, now)
                        done += 1
        async with pool.acquire() as conn:
            # What the paper SLO counts: letters this sweep should have posted and did not (yet).
            PAPER_OVERDUE.set(await store.count_paper_overdue(conn, now, hours, PAPER_GRACE_SECONDS))
            # Letters the secretariat asked to send again, waiting for the hospital system to publish them.
            waiting, oldest = await store.reissues_waiting(conn, now, domain.CLOSED)
            REISSUES_WAITING.set(waiting)
            REISSUE_OLDEST_WAITING.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        return done
