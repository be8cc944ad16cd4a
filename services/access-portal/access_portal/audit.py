"""What the portal keeps past its use: access audit rows older than AUDIT_RETENTION_DAYS, and revocations
whose message never came (``store.REVOKED_EARLY_KEPT_DAYS``); background tasks delete them.

Every replica runs it (``Runtime.every``); the delete is idempotent, so replicas need no coordination.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from access_portal import store
from shared.logs import get_logger

log = get_logger(__name__)


class AuditPruner:
    def __init__(self, pool_getter: Callable[[], asyncpg.Pool], retention_days: int):
        self._pool, self.retention_days = pool_getter, retention_days

    async def prune_once(self) -> int:
        async with self._pool().acquire() as conn:
            deleted = await store.prune_audit(conn, self.retention_days)
        if deleted:
            log.info("access audit pruned", rows=deleted, retention_days=self.retention_days)
        return deleted

    async def prune_revocations(self) -> int:
        async with self._pool().acquire() as conn:
            deleted = await store.prune_revoked_early(conn)
        if deleted:
            log.info("revocations whose message never came forgotten", rows=deleted)
        return deleted
