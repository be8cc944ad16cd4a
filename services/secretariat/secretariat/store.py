"""Secretariat SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared import erasure, retention

_STAMP = {
    "bounced": "bounced_at",
    "downloaded": "downloaded_at",
    "postal": "postal_at",
    "postal-fallback": "postal_at",
    "e-mailed": "emailed_at",
    "printed": "printed_at",
    "posted": "posted_at",
    "returned": "returned_at",
}


# A line of a convocation's timeline, written once per event (a redelivered event adds nothing).
_TIMELINE_LINE = "insert into timeline(convocation_id, event_id, at, kind, detail, action_id)"
_ONCE = "on conflict (event_id) do nothing"


async def add_timeline(
    conn,
    convocation_id: uuid.UUID,
    event_id: uuid.UUID,
    at: datetime,
    kind: str,
    detail: str | None = None,
    action_id: uuid.UUID | None = None,
) -> bool:
    status = await conn.execute(
        f"{_TIMELINE_LINE} values ($1, $2, $3, $4, $5, $6) {_ONCE}",
        convocation_id,
        event_id,
        at,
        kind,
        detail,
        action_id,
    )
    return status == "INSERT 0 1"


async def ensure_convocation(conn, convocation_id: uuid.UUID) -> None:
    """Events about one convocation travel on several queues: whichever comes first creates the row."""
    await conn.execute("insert into convocation(id) values ($1) on conflict do nothing", convocation_id)


def _stamped(column: str) -> tuple[str, str]:
    """The value of a step's column for a new row and for an existing one (``c``), for status $6 at $8."""
    statuses = ", ".join(f"'{status}'" for status, stamp in _STAMP.items() if stamp == column)
    # A step's time is kept whatever order the events arrive in; a new message clears the old one's steps.
    return (
        f"case when $6 in ({statuses}) then $8 end",
        f"case when $6 = 'sealed' and c.message_id is distinct from $2 then null"
        f" when $6 in ({statuses}) then coalesce(c.{column}, $8) else c.{column} end",
    )


_STAMP_COLUMNS = sorted(set(_STAMP.values()))
_NEW_MESSAGE = "$6 = 'sealed' and c.message_id is distinct from $2"
_PAPER = "$6 in ('postal', 'postal-fallback')"
# Columns beyond the steps' times: (value for a new row, value for an existing one ``c``). The first sealing
# stays (the figures count letters by it); why paper and why returned come with their status ($10, the
# detail); the print room told to drop the letter, until paper is asked again.
_MORE = {
    "first_sealed_at": (
        "case when $6 = 'sealed' then $8 end",
        "coalesce(c.first_sealed_at, case when $6 = 'sealed' then $8 end)",
    ),
    "postal_reason": (
        f"case when {_PAPER} then $10 end",
        f"case when {_NEW_MESSAGE} then null when {_PAPER} then coalesce(c.postal_reason, $10)"
        " else c.postal_reason end",
    ),
    "return_reason": (
        "case when $6 = 'returned' then $10 end",
        f"case when {_NEW_MESSAGE} then null when $6 = 'returned' then $10 else c.return_reason end",
    ),
    "paper_cancelled_at": (
        "case when $6 = 'postal-cancelled' then $8 end",
        f"case when {_NEW_MESSAGE} then null when $6 = 'postal-cancelled'"
        " then greatest(c.paper_cancelled_at, $8)"
        f" when {_PAPER} and c.paper_cancelled_at <= $8 then null else c.paper_cancelled_at end",
    ),
}
# The row is created by whichever event comes first, the details are kept when an event lacks them,
# the status only moves forward in time; the report's timeline line goes in the same statement
# (it was five statements, a round trip each).
_APPLY_STATUS = (
    (
        "insert into convocation as c (id, message_id, patient_ref, department, appointment_at, status, delivery,"
        f" status_at, {', '.join(_STAMP_COLUMNS)}, {', '.join(_MORE)})"
        f" values ($1, $2, $3, $4, $5, $6, $7, $8, {', '.join(_stamped(col)[0] for col in _STAMP_COLUMNS)},"
        f" {', '.join(new for new, _ in _MORE.values())})"
        " on conflict (id) do update set"
        f" {', '.join(f'{col} = {_stamped(col)[1]}' for col in _STAMP_COLUMNS)},"
        f" {', '.join(f'{col} = {existing}' for col, (_, existing) in _MORE.items())},"
        " message_id = coalesce($2, c.message_id), patient_ref = coalesce($3, c.patient_ref),"
        " department = coalesce($4, c.department), appointment_at = coalesce($5, c.appointment_at),"
        " delivery = coalesce($7, c.delivery), updated_at = now(),"
        " status = case when c.status_at is null or c.status_at <= $8 then $6 else c.status end,"
        " status_at = case when c.status_at is null or c.status_at <= $8 then $8 else c.status_at end"
    )
    .replace("$6", "$6::text")
    .replace("$8", "$8::timestamptz")
    .replace("$2", "$2::uuid")
    .replace("$10", "$10::text")
)  # typed: used in CASE


_RECORD_STATUS = (
    f"with c as ({_APPLY_STATUS} returning 1) {_TIMELINE_LINE} select $1, $9, $8, $6, $10, $11 from c {_ONCE}"
)


async def record_status(
    conn,
    convocation_id: uuid.UUID,
    *,
    event_id: uuid.UUID,
    status: str,
    at: datetime,
    message_id,
    patient_ref,
    department,
    appointment_at,
    delivery,
    detail: str | None,
    action_id: uuid.UUID | None,
) -> None:
    """A status report: the convocation's row and its timeline line."""
    await conn.execute(
        _RECORD_STATUS,
        convocation_id,
        message_id,
        patient_ref,
        department,
        appointment_at,
        status,
        delivery,
        at,
        event_id,
        detail,
        action_id,
    )


async def set_lock(conn, convocation_id: uuid.UUID, until: datetime | None) -> None:
    await ensure_convocation(conn, convocation_id)
    await conn.execute(
        "update convocation set locked_until = $2, updated_at = now() where id = $1", convocation_id, until
    )


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


async def set_patient(
    conn,
    convocation_id: uuid.UUID,
    *,
    patient_enc: str,
    name_index: list[str],
    birth_index: str | None,
    department_name: str | None,
    phone_hint: str | None,
) -> None:
    """Who the patient of the letter is (sealed at rest, with its search hashes), as its sealing reported."""
    await ensure_convocation(conn, convocation_id)
    await conn.execute(
        "update convocation set patient_enc = $2, name_index = $3, birth_index = $4,"
        " department_name = coalesce($5, department_name), phone_hint = coalesce($6, phone_hint) where id = $1",
        convocation_id,
        patient_enc,
        name_index,
        birth_index,
        department_name,
        phone_hint,
    )


async def stale_patients(conn, field_key_id: str, index_key_id: str, limit: int) -> list[asyncpg.Record]:
    """Rows whose patient details are sealed, or indexed, under another key than the current ones."""
    return await conn.fetch(
        "select id, patient_enc from convocation where patient_enc is not null and (patient_enc not like $1"
        " or birth_index not like $2 or exists (select from unnest(name_index) w where w not like $2))"
        " limit $3 for update skip locked",
        f"fe2.{field_key_id}.%",
        f"{index_key_id}:%",
        limit,
    )


async def set_binding(conn, convocation_id: uuid.UUID, bound: bool, at: datetime) -> None:
    """Whether the patient of this letter has a verified number (the portal's binding, by patient ref)."""
    await conn.execute(
        "insert into patient_binding(patient_ref, bound, at) select patient_ref, $2, $3 from convocation"
        " where id = $1 and patient_ref is not null on conflict (patient_ref) do update set"
        " bound = excluded.bound, at = excluded.at where patient_binding.at <= excluded.at",
        convocation_id,
        bound,
        at,
    )


async def binding_of(conn, patient_ref: str | None) -> asyncpg.Record | None:
    if patient_ref is None:
        return None
    return await conn.fetchrow("select * from patient_binding where patient_ref = $1", patient_ref)


async def first_lock(conn, convocation_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "update convocation set first_locked_at = coalesce(first_locked_at, $2) where id = $1", convocation_id, at
    )


_OPEN = "status not in ('cancelled', 'superseded', 'expired', 'withdrawn')"
_REISSUE_KINDS = "('resend', 'correct-email', 'email-instead')"


async def search(
    conn,
    *,
    departments: list[str] | None,
    convocation_id=None,
    patient_refs=None,
    department=None,
    date_from=None,
    date_to=None,
    worklist=None,
    days: int = 3,
    now: datetime,
    day_start: datetime | None = None,
    name_words: list[list[str]] | None = None,
    birth_hashes: list[str] | None = None,
    reissue_wait_seconds: int = 1800,
    limit: int = 200,
) -> list[asyncpg.Record]:
    """Convocations matching every criterion given, within ``departments`` (None: all departments).
    ``name_words``: per typed word, its keyed hashes (one per key): each word must be in the name."""
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
    for hashes in name_words or []:
        where.append(f"name_index && {arg(hashes)}::text[]")
    if birth_hashes is not None:
        where.append(f"birth_index = any({arg(birth_hashes)}::text[])")
    if department:
        where.append(f"department = {arg(department)}")
    if date_from is not None:
        where.append(f"appointment_at >= {arg(date_from)}")
    if date_to is not None:
        where.append(f"appointment_at < {arg(date_to)}")
    if worklist == "bounced":
        where += ["bounced_at is not null", "downloaded_at is null", _OPEN]
    elif worklist == "not-downloaded":
        where += [
            "downloaded_at is null",
            "postal_at is null",
            _OPEN,
            f"appointment_at > {arg(now)}",
            f"appointment_at <= {arg(now)}::timestamptz + make_interval(days => {arg(days)}::int)",
        ]
    elif worklist == "locked":
        where += [f"locked_until > {arg(now)}::timestamptz", _OPEN]
    elif worklist == "paper-today":
        where += [f"postal_at >= {arg(day_start)}::timestamptz"]
    elif worklist == "returned":
        where += ["returned_at is not null", "downloaded_at is null", _OPEN]
    elif worklist == "unanswered":
        where += [
            _OPEN,
            f"appointment_at > {arg(now)}",
            f"exists (select from action a where a.convocation_id = convocation.id and a.kind in {_REISSUE_KINDS}"
            f" and a.done_at is null and a.requested_at <= {arg(now)}::timestamptz"
            f" - make_interval(secs => {arg(reissue_wait_seconds)}::int))",
        ]
    sql = "select * from convocation" + (" where " + " and ".join(where) if where else "")
    return await conn.fetch(sql + f" order by appointment_at nulls last limit {int(limit)}", *args)


async def figures(
    conn, *, departments: list[str] | None, start: datetime, end: datetime, days: int
) -> list[asyncpg.Record]:
    """Per department, the letters first sealed from ``start`` to ``end``: sent, e-mailed, downloaded within
    ``days`` days of the e-mail (of the sealing for paper-only letters), paper by reason, bounced, returned,
    locked out, and the median time from the e-mail to the download."""
    return await conn.fetch(
        "select department, max(department_name) as department_name, count(*) as sent,"
        " count(emailed_at) as emailed,"
        " count(*) filter (where downloaded_at <= coalesce(emailed_at, first_sealed_at)"
        "  + make_interval(days => $4)) as downloaded_within,"
        " count(postal_at) as paper,"
        " count(bounced_at) as bounced, count(returned_at) as returned, count(first_locked_at) as locked_out,"
        " percentile_cont(0.5) within group (order by extract(epoch from downloaded_at - emailed_at))"
        "  filter (where downloaded_at > emailed_at) as median_seconds"
        " from convocation where first_sealed_at >= $2 and first_sealed_at < $3"
        " and ($1::text[] is null or department = any($1::text[])) and department is not null"
        " group by department order by department",
        departments,
        start,
        end,
        days,
    )


async def paper_reasons(conn, *, departments: list[str] | None, start: datetime, end: datetime) -> list[asyncpg.Record]:
    """Per department and reason, the letters of the period that went on paper."""
    return await conn.fetch(
        "select department, postal_reason as reason, count(*) as n from convocation"
        " where first_sealed_at >= $2 and first_sealed_at < $3 and postal_at is not null"
        " and ($1::text[] is null or department = any($1::text[])) and department is not null"
        " group by department, postal_reason",
        departments,
        start,
        end,
    )


async def department_names(conn, codes: list[str] | None = None) -> dict[str, str]:
    """The hospital's name of each department code seen (the latest letter's)."""
    rows = await conn.fetch(
        "select distinct on (department) department, department_name from convocation"
        " where department_name is not null and ($1::text[] is null or department = any($1::text[]))"
        " order by department, updated_at desc",
        codes,
    )
    return {r["department"]: r["department_name"] for r in rows}


async def insert_action(
    conn,
    *,
    action_id: uuid.UUID,
    convocation_id: uuid.UUID,
    message_id: uuid.UUID,
    department: str | None,
    kind: str,
    staff_subject: str,
) -> None:
    await conn.execute(
        "insert into action(id, convocation_id, message_id, department, kind, staff_subject)"
        " values ($1, $2, $3, $4, $5, $6)",
        action_id,
        convocation_id,
        message_id,
        department,
        kind,
        staff_subject,
    )


# The staff audit lives in the schema secretariat_audit (deploy/postgres/init.sql): this role may only
# append rows (the database sets their time, and their actor from the staff session named), read them
# through secretariat_audit.read() and .search(), and prune through secretariat_audit.prune().


async def audit(
    conn,
    *,
    session_hash: str | None,
    via: str,
    action: str,
    outcome: str,
    convocation_id: uuid.UUID | None = None,
    department: str | None = None,
    reason: str | None = None,
    detail: str | None = None,
) -> None:
    """An audit row. Its time and its person are the database's: the open staff session ``session_hash``
    names (None: nobody signed in, e.g. a refused sign-in); the subject and name sent here are ignored."""
    await conn.execute(
        "insert into secretariat_audit.staff_audit(subject, name, via, action, convocation_id, department, reason,"
        " outcome, detail, session_hash) values ('', '', $1, $2, $3, $4, $5, $6, $7, $8)",
        via,
        action,
        convocation_id,
        department,
        reason,
        outcome,
        detail,
        session_hash,
    )


async def audit_rows(conn, since: datetime | None = None, until: datetime | None = None) -> list[asyncpg.Record]:
    """Every row from ``since`` to ``until``, oldest first (the CSV export)."""
    return await conn.fetch("select * from secretariat_audit.read($1, $2) order by id", since, until)


async def search_audit(
    conn,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    person: str | None = None,
    action: str | None = None,
    convocation_id: uuid.UUID | None = None,
    before_id: int | None = None,
    latest: int | None = None,
) -> list[asyncpg.Record]:
    """Rows matching every filter given, newest first; ``before_id`` pages back, ``latest`` bounds the page
    (None: all of them, the CSV export)."""
    return await conn.fetch(
        "select * from secretariat_audit.search($1, $2, $3, $4, $5, $6, $7)",
        since,
        until,
        person,
        action,
        convocation_id,
        before_id,
        latest,
    )


# --- staff sessions (secretariat_audit.staff_session: the audit names their people) ------------------


async def open_session(
    conn, token_hash: str, *, subject: str, name: str, via: str, roles: list[str], departments: list[str]
) -> None:
    """A staff session (a sign-in, or an API token's first use); the database audits its opening."""
    await conn.execute(
        "select secretariat_audit.open_session($1, $2, $3, $4, $5, $6)",
        token_hash,
        subject,
        name,
        via,
        roles,
        departments,
    )


async def touch_session(conn, token_hash: str, idle_seconds: int, absolute_seconds: int, *, used: bool = True):
    """The session if it is still open (marked used now when ``used``), else None."""
    return await conn.fetchrow(
        "select * from secretariat_audit.touch_session($1, $2, $3, $4)",
        token_hash,
        idle_seconds,
        absolute_seconds,
        used,
    )


async def end_session(conn, token_hash: str) -> None:
    """The session ends (sign-out, audited by the database)."""
    await conn.execute("select secretariat_audit.end_session($1)", token_hash)


def retention_rules(convocation_days: int, binding_days: int, audit_days: int) -> list[retention.RetentionRule]:
    """What the secretariat deletes once past its retention (docs/retention.md): a convocation's read model with
    its timeline and actions; lines whose convocation row never came, as old; the staff audit through
    secretariat_audit.prune()."""
    orphan = "not exists (select from convocation c where c.id = {}.convocation_id)"
    return [
        retention.Rule(
            "convocation",
            "coalesce(appointment_at, updated_at)",
            convocation_days,
            children=(("timeline", "convocation_id"), ("action", "convocation_id")),
        ),
        retention.Rule("timeline", "at", convocation_days, where=orphan.format("timeline")),
        retention.Rule("action", "requested_at", convocation_days, where=orphan.format("action")),
        retention.Rule("patient_binding", "at", binding_days, key="patient_ref"),
        # The record that an erasure was asked and done (no patient data) is kept as long as the staff audit.
        retention.Rule("erasure", "requested_at", audit_days, children=(("erasure_confirmation", "erasure_id"),)),
        retention.Rule(
            "erasure_confirmation",
            "confirmed_at",
            audit_days,
            key="erasure_id",
            where="not exists (select from erasure e where e.id = erasure_confirmation.erasure_id)",
        ),
        retention.AuditRule("secretariat_audit", "staff_audit", audit_days),
    ]


# --- erasure on request ----------------------------------------------------------------------------

_PATIENT = "id = any($1) or patient_ref = any($2)"
ERASE = (
    erasure.Erase(
        "timeline", f"convocation_id = any($1) or convocation_id in (select id from convocation where {_PATIENT})"
    ),
    erasure.Erase(
        "action", f"convocation_id = any($1) or convocation_id in (select id from convocation where {_PATIENT})"
    ),
    erasure.Erase("convocation", _PATIENT),
    erasure.Erase("patient_binding", "patient_ref = any($2)"),
)


async def erase(conn, convocation_ids: list[uuid.UUID], patient_refs: list[str]) -> int:
    """Everything the secretariat holds about the patient: the read model of their convocations (who they are,
    sealed), timelines, actions asked, whether they have a verified number; and the staff audit's rows about
    those convocations made anonymous (secretariat_audit.erase: who did what and when stays)."""
    ids = set(convocation_ids) | {
        r["id"]
        for r in await conn.fetch("select id from convocation where patient_ref = any($1::text[])", patient_refs)
    }
    rows = await erasure.erase(conn, ERASE, sorted(ids), patient_refs)
    return rows + await conn.fetchval("select secretariat_audit.erase($1::uuid[])", sorted(ids))


async def insert_erasure(conn, erasure_id: uuid.UUID) -> None:
    await conn.execute("insert into erasure(id) values ($1)", erasure_id)


async def confirm_erasure(
    conn, erasure_id: uuid.UUID, service: str, convocations: int, rows: int, at: datetime
) -> None:
    """A service's confirmation; the hospital gateway confirms once per convocation, so its counts add up."""
    await conn.execute(
        "insert into erasure_confirmation(erasure_id, service, convocations, rows, confirmed_at)"
        " values ($1, $2, $3, $4, $5) on conflict (erasure_id, service) do update set"
        " convocations = erasure_confirmation.convocations + excluded.convocations,"
        " rows = erasure_confirmation.rows + excluded.rows, confirmed_at = excluded.confirmed_at",
        erasure_id,
        service,
        convocations,
        rows,
        at,
    )


async def get_erasure(conn, erasure_id: uuid.UUID) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    row = await conn.fetchrow("select id, requested_at from erasure where id = $1", erasure_id)
    confirmations = await conn.fetch(
        "select service, convocations, rows, confirmed_at from erasure_confirmation where erasure_id = $1"
        " order by confirmed_at",
        erasure_id,
    )
    return row, list(confirmations)
