"""Hospital gateway SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared import erasure, retention


async def claim_message(
    conn: asyncpg.Connection,
    *,
    system: str,
    control_id: str,
    via: str,
    action: str,
    convocation_id: uuid.UUID,
    event_id: uuid.UUID,
) -> uuid.UUID | None:
    """Record an accepted message; returns None when this id was accepted before (a repeat), else the event id.
    A repeat still in another transaction waits for it."""
    return await conn.fetchval(
        "insert into received(system, control_id, via, action, convocation_id, event_id)"
        " values ($1, $2, $3, $4, $5, $6) on conflict do nothing returning event_id",
        system,
        control_id,
        via,
        action,
        convocation_id,
        event_id,
    )


async def earlier_message(conn: asyncpg.Connection, system: str, control_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select convocation_id, action from received where system = $1 and control_id = $2", system, control_id
    )


async def record_appointment(
    conn: asyncpg.Connection,
    *,
    convocation_id: uuid.UUID,
    system: str,
    appointment_id: str,
    sandbox: bool,
    appointment_at: datetime,
) -> None:
    await conn.execute(
        "insert into appointment(convocation_id, system, appointment_id, sandbox, appointment_at)"
        " values ($1, $2, $3, $4, $5) on conflict (convocation_id) do update set appointment_at = excluded.appointment_at,"
        " cancelled_at = null, updated_at = now()",
        convocation_id,
        system,
        appointment_id,
        sandbox,
        appointment_at,
    )


async def cancel_appointment(conn: asyncpg.Connection, convocation_id: uuid.UUID) -> str | None:
    """Mark the appointment cancelled; returns what it was before ('open', 'cancelled'), None if unknown."""
    return await conn.fetchval(
        "with before as (select cancelled_at from appointment where convocation_id = $1 for update),"
        " done as (update appointment set cancelled_at = coalesce(cancelled_at, now()), updated_at = now()"
        " where convocation_id = $1)"
        " select case when cancelled_at is null then 'open' else 'cancelled' end from before",
        convocation_id,
    )


async def appointment(conn: asyncpg.Connection, convocation_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select convocation_id, system, appointment_id, sandbox from appointment where convocation_id = $1",
        convocation_id,
    )


async def confirm(conn: asyncpg.Connection, event_id: uuid.UUID) -> None:
    """The issuer reported on the event this message became: it was taken."""
    await conn.execute(
        "update received set confirmed_at = now() where event_id = $1 and confirmed_at is null", event_id
    )


async def unconfirmed(conn: asyncpg.Connection, older_than: datetime, limit: int = 100) -> list[asyncpg.Record]:
    """Accepted letters the issuer has not reported on in time (locked for this sweep)."""
    return await conn.fetch(
        "select system, control_id, convocation_id, event_id, received_at from received"
        " where confirmed_at is null and dead_lettered_at is null and action = 'created' and received_at < $1"
        " order by received_at limit $2 for update skip locked",
        older_than,
        limit,
    )


async def dead_letter(conn: asyncpg.Connection, row: asyncpg.Record, reason: str, detail: str) -> None:
    await conn.execute(
        "with marked as (update received set dead_lettered_at = now() where system = $1 and control_id = $2)"
        " insert into dead_letter(system, control_id, convocation_id, event_id, reason, detail)"
        " values ($1, $2, $3, $4, $5, $6)",
        row["system"],
        row["control_id"],
        row["convocation_id"],
        row["event_id"],
        reason,
        detail,
    )


async def delivery(conn: asyncpg.Connection, event_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("select status, attempts from delivery where event_id = $1 for update", event_id)


async def save_delivery(
    conn: asyncpg.Connection,
    *,
    event_id: uuid.UUID,
    convocation_id: uuid.UUID,
    system: str,
    kind: str,
    status: str,
    attempts: int,
    last_error: str | None = None,
) -> None:
    await conn.execute(
        "insert into delivery(event_id, convocation_id, system, kind, status, attempts, last_error)"
        " values ($1, $2, $3, $4, $5, $6, $7) on conflict (event_id) do update set status = excluded.status,"
        " attempts = excluded.attempts, last_error = excluded.last_error, updated_at = now()",
        event_id,
        convocation_id,
        system,
        kind,
        status,
        attempts,
        last_error,
    )


def retention_rules(days: int) -> list[retention.RetentionRule]:
    """What the gateway forgets once past its retention (docs/retention.md): message ids, deliveries, dead
    letters, past appointments."""
    return [
        retention.Rule("received", "received_at", days, key="ctid"),
        retention.Rule("delivery", "updated_at", days, key="event_id"),
        retention.Rule("dead_letter", "at", days),
        retention.Rule("appointment", "coalesce(appointment_at, updated_at)", days, key="convocation_id"),
    ]


async def waiting(conn: asyncpg.Connection) -> tuple[int, float]:
    """Accepted letters not confirmed yet, and the age in seconds of the oldest (0: none)."""
    row = await conn.fetchrow(
        "select count(*) as n, coalesce(extract(epoch from now() - min(received_at)), 0) as age from received"
        " where confirmed_at is null and dead_lettered_at is null and action = 'created'"
    )
    return row["n"], float(row["age"])


ERASE = tuple(
    erasure.Erase(t, "convocation_id = any($1)") for t in ("received", "dead_letter", "delivery", "appointment")
)


async def erase(conn: asyncpg.Connection, convocation_id: uuid.UUID) -> int:
    """Everything the gateway holds about one convocation (the hospital's appointment id among it), and its events
    not yet published or waiting for a retry."""
    return await erasure.erase(conn, ERASE, [convocation_id], [])
