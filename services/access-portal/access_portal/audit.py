"""Access audit retention: a background task deletes rows older than AUDIT_RETENTION_DAYS.

Every replica runs it; the delete is idempotent, so replicas need no coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from access_portal import store
from shared.logs import get_logger

log = get_logger(__name__)


class AuditPruner:
    def __init__(self, pool_getter: Callable[[], asyncpg.Pool], retention_days: int, interval_seconds: float):
        self._pool, self.retention_days, self.interval_seconds = pool_getter, retention_days, interval_seconds
        self._task: asyncio.Task | None = None

    async def prune_once(self) -> int:
        async with self._pool().acquire() as conn:
            deleted = await store.prune_audit(conn, self.retention_days)
        if deleted:
            log.info("access audit pruned", rows=deleted, retention_days=self.retention_days)
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except Exception:  # the database may be away for a while: try again next round
                log.exception("access audit pruning failed")
            await asyncio.sleep(self.interval_seconds)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="access-portal-audit-pruner")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
