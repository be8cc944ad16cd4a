"""Issuer SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def insert_convocation(
    conn: asyncpg.Connection, *, convocation_id: uuid.UUID, message_id: uuid.UUID, patient_ref: str,
    delivery: str, language: str, appointment_at: datetime, expires_at: datetime, created_at: datetime,
    sealed_at: datetime,
) -> bool:
    status = await conn.execute(
        "insert into convocation(id, message_id, patient_ref, delivery, language, status, appointment_at,"
        " expires_at, created_at, sealed_at) values ($1, $2, $3, $4, $5, 'sealed', $6, $7, $8, $9)"
        " on conflict (id) do nothing",
        convocation_id, message_id, patient_ref, delivery, language, appointment_at, expires_at, created_at,
        sealed_at,
    )
    return status == "INSERT 0 1"


async def get_convocation(conn: asyncpg.Connection, convocation_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from convocation where id = $1 for update", convocation_id)


_STAMP_COLUMN = {
    "sealed": "sealed_at",
    "e-mailed": "emailed_at",
    "bounced": "email_failed_at",
    "downloaded": "downloaded_at",
    "postal": "postal_at",
    "postal-fallback": "postal_at",
    "cancelled": "cancelled_at",
}


async def set_status(
    conn: asyncpg.Connection, convocation_id: uuid.UUID, status: str, at: datetime, detail: str | None = None
) -> None:
    column = _STAMP_COLUMN.get(status)
    stamp = f", {column} = coalesce({column}, $3)" if column else ""
    await conn.execute(
        f"update convocation set status = $2, updated_at = now(){stamp} where id = $1",
        convocation_id, status, at,
    )
    await record_history(conn, convocation_id, status, at, detail)


async def stamp(conn: asyncpg.Connection, convocation_id: uuid.UUID, status: str, at: datetime) -> None:
    """Record the time of a step without changing the current status (e.g. e-mailed after download)."""
    column = _STAMP_COLUMN[status]
    await conn.execute(f"update convocation set {column} = coalesce({column}, $2) where id = $1", convocation_id, at)


async def record_history(
    conn: asyncpg.Connection, convocation_id: uuid.UUID, status: str, at: datetime, detail: str | None = None
) -> None:
    await conn.execute(
        "insert into status_history(convocation_id, status, at, detail) values ($1, $2, $3, $4)",
        convocation_id, status, at, detail,
    )
