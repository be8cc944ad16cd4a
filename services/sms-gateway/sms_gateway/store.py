"""SMS gateway SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import asyncpg

_UPSERT = (
    "insert into sms(challenge_id, message_id, convocation_id, phone_hash, country, provider, provider_message_id,"
    " status, attempts, last_error, sent_at, final_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    " on conflict (challenge_id) do update set provider = excluded.provider,"
    " provider_message_id = excluded.provider_message_id, status = excluded.status, attempts = excluded.attempts,"
    " last_error = excluded.last_error, sent_at = excluded.sent_at, final_at = excluded.final_at"
)


async def get_sms(conn: asyncpg.Connection, challenge_id) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from sms where challenge_id = $1 for update", challenge_id)


async def upsert_sms(conn: asyncpg.Connection, *, challenge_id, message_id, convocation_id, phone_hash, country,
                     provider, provider_message_id, status, attempts, last_error=None, sent_at=None,
                     final_at=None) -> None:
    await conn.execute(_UPSERT, challenge_id, message_id, convocation_id, phone_hash, country, provider,
                       provider_message_id, status, attempts, last_error, sent_at, final_at)
