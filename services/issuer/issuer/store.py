"""Issuer SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from shared import erasure, retention

# A convocation's columns as the handlers read them: every one but the print room's copy (the sealed
# letter, up to 13 MB, e.g. 200 KB for a 150 KB PDF), which only posting the letter needs
# (mark_posted() returns it); has_print_copy says whether there is one. tests/integration/test_issuer_handlers.py
# checks that this names every column of the table.
ROW = (
    "id, message_id, patient_ref, delivery, language, status, appointment_at, expires_at, created_at,"
    " sealed_at, emailed_at, email_failed_at, downloaded_at, postal_at, cancelled_at, updated_at,"
    " postal_reason, superseded_count, department, reminded_at, printed_at, posted_at, returned_at,"
    " postal_cancelled_at, sandbox, print_copy is not null as has_print_copy"
)


async def insert_convocation(
    conn: asyncpg.Connection,
    *,
    convocation_id: uuid.UUID,
    message_id: uuid.UUID,
    patient_ref: str,
    delivery: str,
    language: str,
    appointment_at: datetime,
    expires_at: datetime,
    created_at: datetime,
    sealed_at: datetime,
    print_copy: str,
    department: str | None,
    sandbox: bool = False,
) -> asyncpg.Record | None:
    """The new convocation, sealed, and its first history line, in one statement; returns its row, or
    None when a convocation with this id is already there (and then writes nothing). A row another
    transaction inserted and has not committed yet makes this wait for it: None once it commits."""
    return await conn.fetchrow(
        "with inserted as ("
        " insert into convocation(id, message_id, patient_ref, delivery, language, status, appointment_at,"
        " expires_at, created_at, sealed_at, print_copy, department, sandbox)"
        " values ($1, $2, $3, $4, $5, 'sealed', $6, $7, $8, $9, $10, $11, $12) on conflict (id) do nothing"
        f" returning {ROW}),"
        " history as (insert into status_history(convocation_id, status, at)"
        " select id, status, sealed_at from inserted)"
        " select * from inserted",
        convocation_id,
        message_id,
        patient_ref,
        delivery,
        language,
        appointment_at,
        expires_at,
        created_at,
        sealed_at,
        print_copy,
        department,
        sandbox,
    )


async def replace_message(
    conn: asyncpg.Connection,
    convocation_id: uuid.UUID,
    *,
    message_id: uuid.UUID,
    patient_ref: str,
    delivery: str,
    language: str,
    appointment_at: datetime,
    expires_at: datetime,
    sealed_at: datetime,
    print_copy: str,
    department: str | None,
    sandbox: bool = False,
) -> asyncpg.Record:
    """A superseding convocation: a new message, its delivery starting afresh, and its "sealed" history
    line, in one statement; returns the row."""
    return await conn.fetchrow(
        "with replaced as ("
        " update convocation set message_id = $2, patient_ref = $3, delivery = $4, language = $5, status = 'sealed',"
        " appointment_at = $6, expires_at = $7, sealed_at = $8, print_copy = $9, emailed_at = null,"
        " email_failed_at = null, downloaded_at = null, postal_at = null, reminded_at = null, postal_reason = null,"
        " cancelled_at = null, printed_at = null, posted_at = null, returned_at = null, postal_cancelled_at = null,"
        " superseded_count = superseded_count + 1, department = $10, sandbox = $11, updated_at = now()"
        f" where id = $1 returning {ROW}),"
        " history as (insert into status_history(convocation_id, status, at)"
        " select id, status, sealed_at from replaced)"
        " select * from replaced",
        convocation_id,
        message_id,
        patient_ref,
        delivery,
        language,
        appointment_at,
        expires_at,
        sealed_at,
        print_copy,
        department,
        sandbox,
    )


async def mark_posted(
    conn: asyncpg.Connection, convocation_id: uuid.UUID, status: str, reason: str, at: datetime
) -> str | None:
    """Handed to the print room: the status and its history line say why; returns the copy to post. The
    copy stays until the print room reports the letter printed (``set_status(..., drop_print_copy=True)``):
    a letter switched back to e-mail before that can still go on paper. One statement."""
    return await conn.fetchval(
        "with copy as (select print_copy from convocation where id = $1),"
        " posted as (update convocation set status = $2, postal_at = $4, postal_reason = $3,"
        " postal_cancelled_at = null, updated_at = now() where id = $1),"
        " history as (insert into status_history(convocation_id, status, at, detail) values ($1, $2, $4, $3))"
        " select print_copy from copy",
        convocation_id,
        status,
        reason,
        at,
    )


async def cancel_postal(conn: asyncpg.Connection, convocation_id: uuid.UUID, at: datetime, reason: str) -> None:
    """The print room was told to drop the letter (not printed yet): it may be posted again later."""
    await conn.execute(
        "with cancelled as (update convocation set postal_cancelled_at = $2, updated_at = now() where id = $1)"
        " insert into status_history(convocation_id, status, at, detail) values ($1, 'postal-cancelled', $2, $3)",
        convocation_id,
        at,
        reason,
    )


async def due_for_fallback(conn: asyncpg.Connection, now: datetime, fallback_hours: int, limit: int = 100):
    """Convocations not downloaded by their deadline and not posted yet (locked for this sweep)."""
    return await conn.fetch(
        f"select {ROW} from convocation where downloaded_at is null and postal_at is null and print_copy is not null"
        " and status in ('sealed', 'e-mailed', 'bounced')"
        " and appointment_at - make_interval(hours => $2) <= $1 and appointment_at > $1"
        " and sealed_at < appointment_at - make_interval(hours => $2)"
        " order by appointment_at limit $3 for update skip locked",
        now,
        fallback_hours,
        limit,
    )


async def due_for_reminder(
    conn: asyncpg.Connection, now: datetime, fallback_hours: int, reminder_days: int, limit: int = 100
):
    """E-mailed, not downloaded, not posted, not reminded, and the reminder time has come (locked)."""
    return await conn.fetch(
        f"select {ROW} from convocation where reminded_at is null and downloaded_at is null and postal_at is null"
        " and status = 'e-mailed'"
        " and appointment_at - make_interval(hours => $2, days => $3) <= $1"
        " and appointment_at - make_interval(hours => $2) > $1"
        " order by appointment_at limit $4 for update skip locked",
        now,
        fallback_hours,
        reminder_days,
        limit,
    )


async def mark_reminded(conn: asyncpg.Connection, convocation_id: uuid.UUID, at: datetime) -> None:
    await conn.execute("update convocation set reminded_at = $2 where id = $1", convocation_id, at)


async def due_for_expiry(conn: asyncpg.Connection, now: datetime, limit: int = 100):
    return await conn.fetch(
        f"select {ROW} from convocation where expires_at <= $1 and status not in ('expired', 'cancelled', 'withdrawn')"
        " order by expires_at limit $2 for update skip locked",
        now,
        limit,
    )


async def get_convocation(conn: asyncpg.Connection, convocation_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"select {ROW} from convocation where id = $1 for update", convocation_id)


_STAMP_COLUMN = {
    "sealed": "sealed_at",
    "e-mailed": "emailed_at",
    "bounced": "email_failed_at",
    "downloaded": "downloaded_at",
    "postal": "postal_at",
    "postal-fallback": "postal_at",
    "cancelled": "cancelled_at",
    "withdrawn": "cancelled_at",
    "printed": "printed_at",
    "posted": "posted_at",
    "returned": "returned_at",
}


def stamp_column(status: str) -> str:
    """The convocation column holding the first time it reached ``status``."""
    return _STAMP_COLUMN[status]


async def set_status(
    conn: asyncpg.Connection,
    convocation_id: uuid.UUID,
    status: str,
    at: datetime,
    detail: str | None = None,
    *,
    drop_print_copy: bool = False,
) -> None:
    """The new status, the first time of the step, and its history line, in one statement (one round trip);
    ``drop_print_copy`` when the letter needs no paper copy any more (delivered, or revoked)."""
    column = _STAMP_COLUMN.get(status)
    stamp = f", updated_at = now(), {column} = coalesce({column}, $3)" if column else ", updated_at = $3"
    drop = ", print_copy = null" if drop_print_copy else ""
    await conn.execute(
        f"with changed as (update convocation set status = $2{stamp}{drop} where id = $1)"
        " insert into status_history(convocation_id, status, at, detail) values ($1, $2, $3, $4)",
        convocation_id,
        status,
        at,
        detail,
    )


async def stamp(
    conn: asyncpg.Connection, convocation_id: uuid.UUID, status: str, at: datetime, *, drop_print_copy: bool = False
) -> None:
    """Record the time of a step without changing the current status (e.g. e-mailed after download)."""
    column = _STAMP_COLUMN[status]
    drop = ", print_copy = null" if drop_print_copy else ""
    await conn.execute(
        f"update convocation set {column} = coalesce({column}, $2){drop} where id = $1", convocation_id, at
    )


async def reached_before(conn: asyncpg.Connection, convocation_id: uuid.UUID, statuses: tuple[str, ...]) -> bool:
    """Whether the convocation's history already holds one of these statuses (for any of its messages)."""
    return await conn.fetchval(
        "select exists(select 1 from status_history where convocation_id = $1 and status = any($2::text[]))",
        convocation_id,
        list(statuses),
    )


async def count_paper_overdue(
    conn: asyncpg.Connection, now: datetime, fallback_hours: int, grace_seconds: float
) -> int:
    """Letters past their paper deadline (plus a grace) that nobody downloaded and nobody posted."""
    return await conn.fetchval(
        "select count(*) from convocation where downloaded_at is null and postal_at is null and print_copy is not null"
        " and status in ('sealed', 'e-mailed', 'bounced') and appointment_at > $1"
        " and appointment_at - make_interval(hours => $2) + make_interval(secs => $3) <= $1"
        " and sealed_at < appointment_at - make_interval(hours => $2)",
        now,
        fallback_hours,
        grace_seconds,
    )


# --- letters to send again (the secretariat's resend and e-mail correction) ---------------------------


async def reissues_waiting(
    conn: asyncpg.Connection, now: datetime, closed: Iterable[str]
) -> tuple[int, datetime | None]:
    """How many requests the hospital system has not answered yet for letters that can still go out, and
    when the oldest was made. One for a convocation closed (``closed`` statuses) or past since then needs
    no answer any more (a republished one would be refused)."""
    row = await conn.fetchrow(
        "select count(*) as n, min(r.requested_at) as oldest from reissue_request r"
        " join convocation c on c.id = r.convocation_id where r.consumed_at is null"
        " and c.status <> all($2::text[]) and c.appointment_at > $1",
        now,
        sorted(closed),
    )
    return row["n"], row["oldest"]


async def add_reissue_request(
    conn: asyncpg.Connection,
    *,
    action_id: uuid.UUID,
    convocation_id: uuid.UUID,
    reason: str,
    email_sealed: str | None,
    requested_at: datetime,
) -> bool:
    status = await conn.execute(
        "insert into reissue_request(action_id, convocation_id, reason, email_sealed, requested_at)"
        " values ($1, $2, $3, $4, $5) on conflict (action_id) do nothing",
        action_id,
        convocation_id,
        reason,
        email_sealed,
        requested_at,
    )
    return status == "INSERT 0 1"


async def pending_reissues(conn: asyncpg.Connection, convocation_id: uuid.UUID) -> list[asyncpg.Record]:
    """Requests not yet used by a republished convocation, the oldest first (locked)."""
    return await conn.fetch(
        "select * from reissue_request where convocation_id = $1 and consumed_at is null"
        " order by requested_at, action_id for update",
        convocation_id,
    )


async def consume_reissues(
    conn: asyncpg.Connection, convocation_id: uuid.UUID, message_id: uuid.UUID, at: datetime
) -> None:
    await conn.execute(
        "update reissue_request set consumed_at = $3, message_id = $2, email_sealed = null"
        " where convocation_id = $1 and consumed_at is null",
        convocation_id,
        message_id,
        at,
    )


async def reissue_action(conn: asyncpg.Connection, message_id: uuid.UUID) -> uuid.UUID | None:
    """The latest secretariat action a message was sealed for, if it was sealed for one."""
    return await conn.fetchval(
        "select action_id from reissue_request where message_id = $1 order by requested_at desc limit 1", message_id
    )


def retention_rules(convocation_days: int) -> list[retention.RetentionRule]:
    """What the issuer deletes once past its retention (docs/retention.md)."""
    return [
        retention.Rule(
            "convocation",
            "expires_at",
            convocation_days,
            children=(("status_history", "convocation_id"), ("reissue_request", "convocation_id")),
        )
    ]


async def convocations_of(conn: asyncpg.Connection, patient_refs: list[str]) -> list[asyncpg.Record]:
    """Every convocation of the patient known by any of these refs, locked for this transaction."""
    return await conn.fetch(
        f"select {ROW} from convocation where patient_ref = any($1::text[]) order by id for update", patient_refs
    )


ERASE = (
    erasure.Erase("status_history", "convocation_id = any($1)"),
    erasure.Erase("reissue_request", "convocation_id = any($1)"),
    erasure.Erase("convocation", "id = any($1) or patient_ref = any($2)"),
)


async def erase(conn: asyncpg.Connection, convocation_ids: list[uuid.UUID], patient_refs: list[str]) -> int:
    """Everything the issuer holds about the patient: convocations, their history and the letters asked again
    (a corrected address among them), and the events about them not yet published."""
    return await erasure.erase(conn, ERASE, convocation_ids, patient_refs)
