"""Mailer SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

from shared import db, erasure, retention

# The message's lock (db.NAMED_LOCK) is taken before reading its e-mail row: two copies of one
# email.requested delivered at once must not both send. The row is read by the next statement, whose
# snapshot comes after the wait.
_EMAIL_ROW = "select * from email where message_id = $1 for update"


def _message_lock(message_id: uuid.UUID) -> str:
    return f"mailer:{message_id}"


async def get_email(conn: asyncpg.Connection, message_id: uuid.UUID) -> asyncpg.Record | None:
    """The message's e-mail row, after waiting for any other transaction handling the same message."""
    await db.lock_named(conn, _message_lock(message_id))
    return await conn.fetchrow(_EMAIL_ROW, message_id)


async def email_to_send(
    conn: asyncpg.Connection, message_id: uuid.UUID, convocation_id: uuid.UUID
) -> tuple[asyncpg.Record | None, datetime | None]:
    """As :func:`get_email`, with when the latest earlier e-mail of the convocation went out (the one a
    new message replaces), looked up with the wait: two round trips, not three. That time is read as
    of before the wait, which only another message of the same convocation sent meanwhile could change."""
    waited = await conn.fetchrow(
        f"select {db.NAMED_LOCK}, (select max(sent_at) from email where convocation_id = $2 and message_id <> $3"
        " and sent_at is not null) as previous",
        _message_lock(message_id),
        convocation_id,
        message_id,
    )
    return await conn.fetchrow(_EMAIL_ROW, message_id), waited["previous"]


_UPSERT = (
    "insert into email(message_id, convocation_id, smtp_message_id, status, attempts, last_code, last_error,"
    " sent_at, failed_at, recipient, language, public_contact, expires_at)"
    " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)"
    " on conflict (message_id) do update set status = excluded.status, attempts = excluded.attempts,"
    " last_code = excluded.last_code, last_error = excluded.last_error, sent_at = excluded.sent_at,"
    " failed_at = excluded.failed_at, recipient = coalesce(excluded.recipient, email.recipient),"
    " language = coalesce(excluded.language, email.language),"
    " public_contact = coalesce(excluded.public_contact, email.public_contact),"
    " expires_at = coalesce(excluded.expires_at, email.expires_at)"
)


async def _record(
    conn,
    message_id,
    convocation_id,
    smtp_message_id,
    status: str,
    attempts: int,
    *,
    code=None,
    reason: str | None = None,
    sent_at=None,
    failed_at=None,
    recipient=None,
    language=None,
    public_contact: dict | None = None,
    expires_at=None,
) -> None:
    """The e-mail's state after an attempt, in one statement; what it does not say is kept."""
    await conn.execute(
        _UPSERT,
        message_id,
        convocation_id,
        smtp_message_id,
        status,
        attempts,
        code,
        reason[:500] if reason else reason,
        sent_at,
        failed_at,
        recipient,
        language,
        json.dumps(public_contact) if public_contact else None,
        expires_at,
    )


async def record_sent(
    conn,
    message_id,
    convocation_id,
    smtp_message_id,
    attempts,
    at: datetime,
    *,
    recipient: str,
    language: str,
    public_contact: dict | None,
    expires_at: datetime,
) -> None:
    """``recipient`` is the sealed address and name, kept for notices until the message expires."""
    await _record(
        conn,
        message_id,
        convocation_id,
        smtp_message_id,
        "sent",
        attempts,
        sent_at=at,
        recipient=recipient,
        language=language,
        public_contact=public_contact,
        expires_at=expires_at,
    )


async def mark_sandbox(conn, message_id: uuid.UUID) -> None:
    """A sandbox test's e-mail: its notices go to the sandbox endpoint too."""
    await conn.execute("update email set sandbox = true where message_id = $1", message_id)


async def record_retry(conn, message_id, convocation_id, smtp_message_id, attempts, code, reason) -> None:
    await _record(conn, message_id, convocation_id, smtp_message_id, "retrying", attempts, code=code, reason=reason)


async def record_failed(conn, message_id, convocation_id, smtp_message_id, attempts, code, reason, at) -> None:
    await _record(
        conn, message_id, convocation_id, smtp_message_id, "failed", attempts, code=code, reason=reason, failed_at=at
    )


async def record_bounced(conn, message_id: uuid.UUID, code: int | None, reason: str, at: datetime) -> bool:
    """A late hard bounce of an e-mail the relay had accepted; False when it was already recorded."""
    status = await conn.execute(
        "update email set status = 'bounced', last_code = $2, last_error = $3, bounced_at = $4"
        " where message_id = $1 and status = 'sent'",
        message_id,
        code,
        reason[:500],
        at,
    )
    return status == "UPDATE 1"


async def record_revoked(conn, message_id: uuid.UUID, convocation_id: uuid.UUID, smtp_message_id: str) -> None:
    """Revoked before its e-mail went out (still retrying, or not seen yet): it never will."""
    await conn.execute(
        "insert into email(message_id, convocation_id, smtp_message_id, status) values ($1, $2, $3, 'revoked')"
        " on conflict (message_id) do update set status = 'revoked' where email.status = 'retrying'",
        message_id,
        convocation_id,
        smtp_message_id,
    )


async def add_bounce_token(conn, token_hash: bytes, message_id: uuid.UUID, kind: str, recipient_hash: str) -> None:
    await conn.execute(
        "insert into bounce_token(token_hash, message_id, kind, recipient_hash) values ($1, $2, $3, $4)",
        token_hash,
        message_id,
        kind,
        recipient_hash,
    )


async def message_of_token(conn, token_hash: bytes) -> uuid.UUID | None:
    return await conn.fetchval("select message_id from bounce_token where token_hash = $1", token_hash)


async def token_recipient(conn, token_hash: bytes) -> tuple[uuid.UUID, str | None] | None:
    """The message an e-mail's bounce token names, and the keyed hash of the address it went to."""
    row = await conn.fetchrow("select message_id, recipient_hash from bounce_token where token_hash = $1", token_hash)
    return (row["message_id"], row["recipient_hash"]) if row else None


async def notice_done(conn, message_id: uuid.UUID, kind: str) -> bool:
    return await conn.fetchval("select true from notice where message_id = $1 and kind = $2", message_id, kind) or False


async def record_notice(conn, message_id: uuid.UUID, kind: str, outcome: str, at: datetime) -> None:
    await conn.execute(
        "insert into notice(message_id, kind, outcome, at) values ($1, $2, $3, $4) on conflict do nothing",
        message_id,
        kind,
        outcome,
        at,
    )


async def forget_recipient(conn, message_id: uuid.UUID) -> None:
    """The message is over (revoked or expired): nothing of the patient stays, no bounce is taken."""
    await conn.execute("update email set recipient = null where message_id = $1", message_id)
    await conn.execute("delete from bounce_token where message_id = $1", message_id)


async def forget_expired(conn, now: datetime, limit: int = 500) -> int:
    rows = await conn.fetch(
        "update email set recipient = null where message_id in (select message_id from email"
        " where recipient is not null and expires_at <= $1 limit $2 for update skip locked) returning message_id",
        now,
        limit,
    )
    ids = [r["message_id"] for r in rows]
    if ids:
        await conn.execute("delete from bounce_token where message_id = any($1::uuid[])", ids)
    return len(ids)


def retention_rules(email_days: int) -> list[retention.RetentionRule]:
    """What the mailer deletes once past its retention (docs/retention.md): an e-mail with its notices and
    bounce tokens, and those of a message whose e-mail row is gone already."""
    no_email = "not exists (select from email e where e.message_id = {}.message_id)"
    return [
        retention.Rule(
            "email",
            "coalesce(expires_at, created_at)",
            email_days,
            key="message_id",
            children=(("notice", "message_id"), ("bounce_token", "message_id")),
        ),
        retention.Rule("notice", "at", email_days, key="message_id", where=no_email.format("notice")),
        retention.Rule(
            "bounce_token", "created_at", email_days, key="token_hash", where=no_email.format("bounce_token")
        ),
    ]


_EMAILS = "message_id in (select message_id from email where convocation_id = any($1))"
ERASE = (
    erasure.Erase("notice", _EMAILS),
    erasure.Erase("bounce_token", _EMAILS),
    erasure.Erase("email", "convocation_id = any($1)"),
)


async def erase(conn: asyncpg.Connection, convocation_ids: list[uuid.UUID]) -> int:
    """Everything the mailer holds about these convocations: their e-mails (the sealed address among them),
    notices, bounce tokens, and the retry copies waiting in the outbox."""
    return await erasure.erase(conn, ERASE, convocation_ids, [])
