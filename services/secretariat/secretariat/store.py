"""Secretariat SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared import db

_STAMP = {"bounced": "bounced_at", "downloaded": "downloaded_at", "postal": "postal_at", "postal-fallback": "postal_at"}


# A line of a convocation's timeline, written once per event (a redelivered event adds nothing).
_TIMELINE_LINE = "insert into timeline(convocation_id, event_id, at, kind, detail, action_id)"
_ONCE = "on conflict (event_id) do nothing"


async def add_timeline(conn, convocation_id: uuid.UUID, event_id: uuid.UUID, at: datetime, kind: str,
                       detail: str | None = None, action_id: uuid.UUID | None = None) -> bool:
    status = await conn.execute(f"{_TIMELINE_LINE} values ($1, $2, $3, $4, $5, $6) {_ONCE}",
                                convocation_id, event_id, at, kind, detail, action_id)
    return status == "INSERT 0 1"


async def ensure_convocation(conn, convocation_id: uuid.UUID) -> None:
    """Events about one convocation travel on several queues: whichever comes first creates the row."""
    await conn.execute("insert into convocation(id) values ($1) on conflict do nothing", convocation_id)


def _stamped(column: str) -> tuple[str, str]:
    """The value of a step's column for a new row and for an existing one (``c``), for status $6 at $8."""
    statuses = ", ".join(f"'{status}'" for status, stamp in _STAMP.items() if stamp == column)
    # A step's time is kept whatever order the events arrive in; a new message clears the old one's steps.
    return (f"case when $6 in ({statuses}) then $8 end",
            f"case when $6 = 'sealed' and c.message_id is distinct from $2 then null"
            f" when $6 in ({statuses}) then coalesce(c.{column}, $8) else c.{column} end")


_STAMP_COLUMNS = sorted(set(_STAMP.values()))
# The row is created by whichever event comes first, the details are kept when an event lacks them,
# the status only moves forward in time; the report's timeline line goes in the same statement
# (it was five statements, a round trip each).
_APPLY_STATUS = (
    "insert into convocation as c (id, message_id, patient_ref, department, appointment_at, status, delivery,"
    f" status_at, {', '.join(_STAMP_COLUMNS)})"
    f" values ($1, $2, $3, $4, $5, $6, $7, $8, {', '.join(_stamped(col)[0] for col in _STAMP_COLUMNS)})"
    " on conflict (id) do update set"
    f" {', '.join(f'{col} = {_stamped(col)[1]}' for col in _STAMP_COLUMNS)},"
    " message_id = coalesce($2, c.message_id), patient_ref = coalesce($3, c.patient_ref),"
    " department = coalesce($4, c.department), appointment_at = coalesce($5, c.appointment_at),"
    " delivery = coalesce($7, c.delivery), updated_at = now(),"
    " status = case when c.status_at is null or c.status_at <= $8 then $6 else c.status end,"
    " status_at = case when c.status_at is null or c.status_at <= $8 then $8 else c.status_at end"
).replace("$6", "$6::text").replace("$8", "$8::timestamptz").replace("$2", "$2::uuid")  # typed: used in CASE


_RECORD_STATUS = (
    f"with c as ({_APPLY_STATUS} returning 1)"
    f" {_TIMELINE_LINE} select $1, $9, $8, $6, $10, $11 from c {_ONCE}"
)


async def record_status(conn, convocation_id: uuid.UUID, *, event_id: uuid.UUID, status: str, at: datetime,
                        message_id, patient_ref, department, appointment_at, delivery, detail: str | None,
                        action_id: uuid.UUID | None) -> None:
    """A status report: the convocation's row and its timeline line."""
    await conn.execute(_RECORD_STATUS, convocation_id, message_id, patient_ref, department, appointment_at, status,
                       delivery, at, event_id, detail, action_id)


async def set_lock(conn, convocation_id: uuid.UUID, until: datetime | None) -> None:
    await ensure_convocation(conn, convocation_id)
    await conn.execute("update convocation set locked_until = $2, updated_at = now() where id = $1",
                       convocation_id, until)


async def set_phone_hint(conn, convocation_id: uuid.UUID, hint: str | None) -> None:
    if hint:
        await ensure_convocation(conn, convocation_id)
        await conn.execute("update convocation set phone_hint = $2 where id = $1", convocation_id, hint)


async def action_done(conn, action_id: uuid.UUID, at: datetime) -> None:
    await conn.execute("update action set done_at = coalesce(done_at, $2) where id = $1", action_id, at)


async def get_convocation(conn, convocation_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from convocation where id = $1", convocation_id)


async def timeline_of(conn, convocation_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch("select * from timeline where convocation_id = $1 order by at, id", convocation_id)


async def actions_of(conn, convocation_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch("select * from action where convocation_id = $1 order by requested_at", convocation_id)


async def search(conn, *, departments: list[str] | None, convocation_id=None, patient_refs=None,
                 department=None, date_from=None, date_to=None, worklist=None, days: int = 3,
                 now: datetime, day_start: datetime | None = None, limit: int = 200) -> list[asyncpg.Record]:
    """Convocations matching every criterion given, within ``departments`` (None: all departments)."""
    where, args = [], []

    def arg(value) -> str:
        args.append(value)
        return f"${len(args)}"

    if departments is not None:
        where.append(f"department = any({arg(departments)}::text[])")
    if convocation_id is not None:
        where.append(f"id = {arg(convocation_id)}")
    if patient_refs is not None:
        where.append(f"patient_ref = any({arg(list(patient_refs))}::text[])")
    if department:
        where.append(f"department = {arg(department)}")
    if date_from is not None:
        where.append(f"appointment_at >= {arg(date_from)}")
    if date_to is not None:
        where.append(f"appointment_at < {arg(date_to)}")
    open_statuses = "status not in ('cancelled', 'superseded', 'expired', 'withdrawn')"
    if worklist == "bounced":
        where += ["bounced_at is not null", "downloaded_at is null", open_statuses]
    elif worklist == "not-downloaded":
        where += ["downloaded_at is null", "postal_at is null", open_statuses,
                  f"appointment_at > {arg(now)}",
                  f"appointment_at <= {arg(now)}::timestamptz + make_interval(days => {arg(days)}::int)"]
    elif worklist == "locked":
        where += [f"locked_until > {arg(now)}::timestamptz", open_statuses]
    elif worklist == "paper-today":
        where += [f"postal_at >= {arg(day_start)}::timestamptz"]
    sql = "select * from convocation" + (" where " + " and ".join(where) if where else "")
    return await conn.fetch(sql + f" order by appointment_at nulls last limit {int(limit)}", *args)


async def insert_action(conn, *, action_id: uuid.UUID, convocation_id: uuid.UUID, message_id: uuid.UUID,
                        department: str | None, kind: str, staff_subject: str) -> None:
    await conn.execute(
        "insert into action(id, convocation_id, message_id, department, kind, staff_subject)"
        " values ($1, $2, $3, $4, $5, $6)", action_id, convocation_id, message_id, department, kind, staff_subject)


# The staff audit lives in the schema secretariat_audit (deploy/postgres/init.sql): this role may only
# append rows, read them through secretariat_audit.read() and prune through secretariat_audit.prune().


async def audit(conn, *, subject: str, name: str, via: str, action: str, outcome: str,
                convocation_id: uuid.UUID | None = None, department: str | None = None, reason: str | None = None,
                detail: str | None = None) -> None:
    await conn.execute(
        "insert into secretariat_audit.staff_audit(subject, name, via, action, convocation_id, department, reason,"
        " outcome, detail) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        subject, name, via, action, convocation_id, department, reason, outcome, detail)


async def audit_rows(conn, since: datetime | None = None, until: datetime | None = None) -> list[asyncpg.Record]:
    """Every row from ``since`` to ``until``, oldest first (the CSV export)."""
    return await conn.fetch("select * from secretariat_audit.read($1, $2) order by id", since, until)


async def latest_audit_rows(conn, count: int) -> list[asyncpg.Record]:
    """The ``count`` newest rows, newest first (the supervisors' page)."""
    return await conn.fetch("select * from secretariat_audit.read(latest => $1)", count)


async def prune_audit(conn, retention_days: int) -> int:
    """Delete audit rows older than the retention (at least a year), in batches."""
    return await db.prune_audit(conn, "secretariat_audit", retention_days)


# --- staff sessions ---------------------------------------------------------------------------------


async def insert_session(conn, token_hash: str, *, subject: str, name: str, roles: list[str],
                         departments: list[str]) -> None:
    await conn.execute(
        "insert into staff_session(token_hash, subject, name, roles, departments) values ($1, $2, $3, $4, $5)",
        token_hash, subject, name, roles, departments)


async def touch_session(conn, token_hash: str, idle_seconds: int, absolute_seconds: int):
    """The session if it is still open (and mark it used), else None."""
    return await conn.fetchrow(
        "update staff_session set last_seen_at = now() where token_hash = $1 and ended_at is null"
        " and last_seen_at > now() - make_interval(secs => $2) and created_at > now() - make_interval(secs => $3)"
        " returning *", token_hash, idle_seconds, absolute_seconds)


async def end_session(conn, token_hash: str) -> None:
    await conn.execute("update staff_session set ended_at = now() where token_hash = $1 and ended_at is null",
                       token_hash)
