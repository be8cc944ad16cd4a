"""Retention: the one sweep that deletes what each service keeps past its retention period.

Each service lists its rules (``retention_rules`` beside its store); docs/retention.md is the table of them.
A ``Rule`` deletes the rows of one table of the service's schema whose reference time is older than its
days, with the rows of the tables that hang off each one (``children``) in the same statement, so a
foreign key never stops a sweep. An ``AuditRule`` prunes an append-only audit through its schema's
``prune()`` function, the only delete the service's role may run there. Deletes go in batches of their
own statement (``FOR UPDATE SKIP LOCKED``), oldest first along an index of the reference time: no long
lock, no scan of what is kept, and several replicas sweep side by side without waiting for one another. Every row deleted is counted (``convocations_retention_swept_rows_total``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from shared.logs import get_logger
from shared.metrics import RETENTION_SWEPT

log = get_logger(__name__)
_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"not a table or column name: {value!r}")
    return value


@dataclass(frozen=True)
class Rule:
    """Rows of ``table`` whose ``age`` (a column, or an SQL expression of the row's columns) is more than
    ``days`` old go, with the rows of ``children`` ((table, column naming ``key``)) that belong to them.
    ``where``: an extra SQL condition on the row (for instance: only once its parent is gone)."""

    table: str
    age: str
    days: int
    key: str = "id"
    children: tuple[tuple[str, str], ...] = ()
    where: str = ""

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"{self.table}: a retention period is at least one day (got {self.days})")
        for name in (self.table, self.key, *(part for child in self.children for part in child)):
            _name(name)

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table, *(child for child, _ in self.children))

    def statement(self) -> str:
        """One batch: $1 the days, $2 the batch size; returns the rows deleted from the table and each child."""
        extra = f" and ({self.where})" if self.where else ""
        ctes = [
            f"doomed as (select {self.key} from {self.table}"
            f" where {self.age} < now() - make_interval(days => $1){extra}"
            f" order by {self.age} limit $2 for update skip locked)"
        ]
        ctes += [
            f"c{n} as (delete from {child} where {column} in (select {self.key} from doomed) returning 1)"
            for n, (child, column) in enumerate(self.children)
        ]
        ctes.append(f"p as (delete from {self.table} where {self.key} in (select {self.key} from doomed) returning 1)")
        counts = ", ".join(
            f"(select count(*) from {name})" for name in ("p", *(f"c{n}" for n in range(len(self.children))))
        )
        return f"with {', '.join(ctes)} select array[{counts}]::bigint[]"

    async def delete_batch(self, conn: asyncpg.Connection, batch: int) -> list[int]:
        """Rows deleted, per table of ``tables``."""
        return list(await conn.fetchval(self.statement(), self.days, batch))


@dataclass(frozen=True)
class AuditRule:
    """The append-only audit ``table`` of ``schema``, pruned through ``<schema>.prune(retention_days, batch)``."""

    schema: str
    audit_table: str
    days: int

    def __post_init__(self) -> None:
        _name(self.schema)

    @property
    def tables(self) -> tuple[str, ...]:
        return (f"{self.schema}.{self.audit_table}",)

    async def delete_batch(self, conn: asyncpg.Connection, batch: int) -> list[int]:
        return [await conn.fetchval(f"select {self.schema}.prune($1, $2)", self.days, batch)]


RetentionRule = Rule | AuditRule


def inbox_rule(days: int) -> Rule:
    """Every service's inbox: event ids consumed, kept to recognise a redelivery (shared/consumer.py)."""
    return Rule("inbox", "received_at", days, key="event_id")


async def sweep_rule(conn: asyncpg.Connection, rule: RetentionRule, *, batch: int = 1000) -> dict[str, int]:
    """Delete what ``rule`` says is past its retention, one batch per statement, until a batch comes short.
    Returns the rows deleted per table (those with none left out)."""
    deleted: dict[str, int] = {}
    while True:
        counts = await rule.delete_batch(conn, batch)
        for table, n in zip(rule.tables, counts, strict=True):
            if n:
                deleted[table] = deleted.get(table, 0) + n
        if counts[0] < batch:
            return deleted


class Sweeper:
    """A service's retention sweep: every rule in turn (a periodic task, ``Runtime.every``)."""

    def __init__(
        self, service: str, pool_getter: Callable[[], asyncpg.Pool], rules: Sequence[RetentionRule], batch: int = 1000
    ) -> None:
        self.service, self._pool, self.rules, self.batch = service, pool_getter, tuple(rules), batch
        for rule in self.rules:  # every table from the start at 0, so that a rate over it is defined
            for table in rule.tables:
                RETENTION_SWEPT.labels(service, table)

    async def sweep_once(self) -> dict[str, int]:
        swept: dict[str, int] = {}
        async with self._pool().acquire() as conn:
            for rule in self.rules:
                for table, n in (await sweep_rule(conn, rule, batch=self.batch)).items():
                    RETENTION_SWEPT.labels(self.service, table).inc(n)
                    swept[table] = swept.get(table, 0) + n
        if swept:
            log.info("rows past their retention deleted", rows=swept)
        return swept
