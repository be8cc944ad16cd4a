"""Mailer SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def get_email(conn: asyncpg.Connection, message_id: uuid.UUID) -> asyncpg.Record | None:
    """The message's e-mail row, after waiting for any other transaction handling the same message
    (two copies of one message.sealed delivered at once must not both send)."""
    await conn.execute("select pg_advisory_xact_lock(hashtextextended('mailer:' || $1, 0))", str(message_id))
    return await conn.fetchrow("select * from email where message_id = $1 for update", message_id)


_UPSERT = (
    "insert into email(message_id, convocation_id, smtp_message_id, status, attempts, last_code, last_error,"
    " sent_at, failed_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " on conflict (message_id) do update set status = excluded.status, attempts = excluded.attempts,"
    " last_code = excluded.last_code, last_error = excluded.last_error, sent_at = excluded.sent_at,"
    " failed_at = excluded.failed_at"
)


async def record_sent(conn, message_id, convocation_id, smtp_message_id, attempts, at: datetime) -> None:
    await conn.execute(_UPSERT, message_id, convocation_id, smtp_message_id, "sent", attempts, None, None, at, None)


async def record_retry(conn, message_id, convocation_id, smtp_message_id, attempts, code, reason) -> None:
    await conn.execute(_UPSERT, message_id, convocation_id, smtp_message_id, "retrying", attempts, code,
                       reason[:500], None, None)


async def record_failed(conn, message_id, convocation_id, smtp_message_id, attempts, code, reason, at) -> None:
    await conn.execute(_UPSERT, message_id, convocation_id, smtp_message_id, "failed", attempts, code,
                       reason[:500], None, at)
