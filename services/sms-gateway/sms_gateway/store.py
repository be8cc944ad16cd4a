"""SMS gateway SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared import erasure, retention
from sms_gateway.rules import Report

_SAVE = (
    "insert into sms(challenge_id, message_id, convocation_id, otp_event_id, phone_hash, country, provider,"
    " provider_message_id, status, attempts, error_code, last_error, sent_at, final_at)"
    " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    " on conflict (challenge_id) do update set provider = excluded.provider,"
    " provider_message_id = excluded.provider_message_id, status = excluded.status, attempts = excluded.attempts,"
    " error_code = excluded.error_code, last_error = excluded.last_error, sent_at = excluded.sent_at,"
    " final_at = excluded.final_at, updated_at = now()"
)


async def lock_sms(conn: asyncpg.Connection, challenge_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from sms where challenge_id = $1 for update", challenge_id)


async def lock_sms_by_provider_message(
    conn: asyncpg.Connection, provider: str, provider_message_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select * from sms where provider = $1 and provider_message_id = $2 for update", provider, provider_message_id
    )


async def lock_number(conn: asyncpg.Connection, phone_hash: str) -> None:
    """Serialise sends to one number until commit, so its hourly cap is exact."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('sms-number:' || $1))", phone_hash)


async def count_sent_since(conn: asyncpg.Connection, since: datetime, phone_hashes=None) -> int:
    """SMS a provider accepted since ``since``: overall, or to the number whose hashes (one per key) are given."""
    if phone_hashes is None:
        return await conn.fetchval("select count(*) from sms where sent_at > $1", since)
    return await conn.fetchval(
        "select count(*) from sms where phone_hash = any($1::text[]) and sent_at > $2", list(phone_hashes), since
    )


async def code_sent_before(conn: asyncpg.Connection, convocation_id: uuid.UUID) -> bool:
    """Whether a provider already accepted a code for this convocation (any challenge)."""
    return await conn.fetchval(
        "select exists(select 1 from sms where convocation_id = $1 and sent_at is not null)", convocation_id
    )


async def save_sms(
    conn: asyncpg.Connection,
    *,
    challenge_id,
    message_id,
    convocation_id,
    otp_event_id,
    phone_hash,
    country,
    attempts,
    status,
    provider=None,
    provider_message_id=None,
    error_code=None,
    last_error=None,
    sent_at=None,
    final_at=None,
) -> None:
    await conn.execute(
        _SAVE,
        challenge_id,
        message_id,
        convocation_id,
        otp_event_id,
        phone_hash,
        country,
        provider,
        provider_message_id,
        status,
        attempts,
        error_code,
        last_error,
        sent_at,
        final_at,
    )


async def insert_attempt(
    conn: asyncpg.Connection,
    challenge_id: uuid.UUID,
    attempt: int,
    provider: str,
    outcome: str,
    error_code: str | None = None,
    detail: str | None = None,
) -> None:
    await conn.execute(
        "insert into sms_attempt(challenge_id, attempt, provider, outcome, error_code, detail)"
        " values ($1, $2, $3, $4, $5, $6)",
        challenge_id,
        attempt,
        provider,
        outcome,
        error_code,
        detail,
    )


async def set_status(
    conn: asyncpg.Connection,
    challenge_id: uuid.UUID,
    status: str,
    *,
    error_code: str | None,
    last_error: str | None,
    final: bool,
) -> None:
    await conn.execute(
        "update sms set status = $2, error_code = coalesce($3, error_code), last_error = coalesce($4, last_error),"
        " final_at = case when $5 then now() else final_at end, updated_at = now() where challenge_id = $1",
        challenge_id,
        status,
        error_code,
        last_error,
        final,
    )


async def insert_report(conn: asyncpg.Connection, report: Report, outcome: str) -> None:
    await conn.execute(
        "insert into sms_report(provider, provider_message_id, provider_status, error_code, outcome)"
        " values ($1, $2, $3, $4, $5)",
        report.provider,
        report.provider_message_id,
        report.provider_status,
        report.error_code,
        outcome,
    )


async def unmatched_reports(conn: asyncpg.Connection, provider: str, provider_message_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select * from sms_report where provider = $1 and provider_message_id = $2 and outcome = 'unmatched'"
        " order by id for update",
        provider,
        provider_message_id,
    )


async def set_report_outcome(conn: asyncpg.Connection, report_id: int, outcome: str) -> None:
    await conn.execute("update sms_report set outcome = $2 where id = $1", report_id, outcome)


def retention_rules(sms_days: int) -> list[retention.RetentionRule]:
    """What the SMS gateway deletes once past its retention (docs/retention.md)."""
    return [
        retention.Rule("sms", "created_at", sms_days, key="challenge_id", children=(("sms_attempt", "challenge_id"),)),
        retention.Rule("sms_report", "received_at", sms_days),
    ]


_SMS = "(select challenge_id from sms where convocation_id = any($1))"
ERASE = (
    erasure.Erase("sms_attempt", f"challenge_id in {_SMS}"),
    erasure.Erase(
        "sms_report",
        "(provider, provider_message_id) in (select provider, provider_message_id from sms"
        " where convocation_id = any($1) and provider_message_id is not null)",
    ),
    erasure.Erase("sms", "convocation_id = any($1)"),
)


async def erase(conn: asyncpg.Connection, convocation_ids: list[uuid.UUID]) -> int:
    """Everything the gateway holds about these convocations: their SMS (the number's keyed hash among them),
    provider attempts and delivery reports, and the retry copies waiting in the outbox."""
    return await erasure.erase(conn, ERASE, convocation_ids, [])
