"""Access portal SQL: small functions that take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from access_portal.records import Binding, Challenge, Message, SendCounts
from shared import db, erasure, retention


# Storing a message and revoking it wait for each other on this lock (db.lock_named), so that the next
# statement of each sees what the other committed: a revocation never misses the message, a message
# never misses its revocation.
def _message_lock(message_id: uuid.UUID) -> str:
    return f"portal-message:{message_id}"


async def insert_message(conn: asyncpg.Connection, **m) -> bool:
    """Store a sealed message, revoked at once (its sealed parts dropped) if its revocation came first."""
    await db.lock_named(conn, _message_lock(m["message_id"]))
    status = await conn.execute(
        "with early as (delete from revoked_early where message_id = $1 returning state, reason)"
        " insert into message(message_id, convocation_id, patient_ref, language, key_id, document_nonce,"
        " document_ciphertext, details_nonce, details_ciphertext, expires_at, secretariat_phone,"
        " secretariat_email, phone_hash, phone_hint, phone_enc, public_phone, public_email, patient_refs,"
        " state, revoked_reason, sandbox, trace_context)"
        " select $1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::bytea,"
        " case when early.state is null then $7::bytea end, $8::bytea,"
        " case when early.state is null then $9::bytea end, $10::timestamptz, $11::text, $12::text, $13::text,"
        " $14::text, $15::text, $16::text, $17::text, $18::text[], coalesce(early.state, 'active'), early.reason,"
        " $19::boolean, $20::jsonb"
        " from (select) one left join early on true"
        " on conflict do nothing",
        m["message_id"],
        m["convocation_id"],
        m["patient_ref"],
        m["language"],
        m["key_id"],
        m["document_nonce"],
        m["document_ciphertext"],
        m["details_nonce"],
        m["details_ciphertext"],
        m["expires_at"],
        m["secretariat_phone"],
        m["secretariat_email"],
        m["phone_hash"],
        m["phone_hint"],
        m["phone_enc"],
        m["public_phone"],
        m["public_email"],
        list(dict.fromkeys([m["patient_ref"], *m.get("patient_refs", [])])),
        m.get("sandbox", False),
        m.get("trace_context") or None,
    )
    return status == "INSERT 0 1"


async def patient_refs(conn: asyncpg.Connection, message: Message) -> list[str]:
    """Every ref the patient of this message is known by here: its own, those the issuer sent with it
    (one per PATIENT_REF_KEY key), and those of the patient's letters sharing one of them, transitively
    (a letter sealed before a rotation knows only the old ref; a later one links it to the new one)."""
    refs = {message.patient_ref, *(message.patient_refs or [])}
    for _ in range(8):  # one step per rotation that linked two keys; a few rotations at most
        linked = await conn.fetchval(
            "select array_agg(distinct r) from message m, unnest(coalesce(m.patient_refs, array[m.patient_ref])) r"
            " where m.patient_refs && $1::text[] or m.patient_ref = any($1::text[])",
            list(refs),
        )
        if set(linked or []) <= refs:
            break
        refs |= set(linked)
    return sorted(refs)


async def get_message(conn: asyncpg.Connection, message_id: uuid.UUID, *, lock: bool = False) -> Message | None:
    return Message.maybe(
        await conn.fetchrow("select * from message where message_id = $1" + (" for update" if lock else ""), message_id)
    )


async def revoke_message(conn: asyncpg.Connection, message_id: uuid.UUID, reason: str) -> None:
    """Drop the message's sealed parts for good. Not stored yet (its message.sealed comes through another
    queue): the revocation waits for it in ``revoked_early``, so that it is never stored readable."""
    state = "expired" if reason == "expired" else "revoked"
    await db.lock_named(conn, _message_lock(message_id))
    await conn.execute(
        "with revoked as (update message set state = $2, revoked_reason = $3, document_ciphertext = null,"
        " details_ciphertext = null where message_id = $1 returning 1)"
        " insert into revoked_early(message_id, state, reason) select $1, $2, $3"
        " where not exists (select from revoked) on conflict (message_id) do nothing",
        message_id,
        state,
        reason,
    )


async def prove_for_message(conn, message_id: uuid.UUID, phone_hash: str, phone_hint: str, phone_enc: str) -> None:
    """A number proven through this link, for this message only (no number on file)."""
    await conn.execute(
        "update message set proven_hash = $2, proven_hint = $3, proven_enc = $4 where message_id = $1",
        message_id,
        phone_hash,
        phone_hint,
        phone_enc,
    )


async def get_binding(conn: asyncpg.Connection, patient_refs: list[str]) -> Binding | None:
    """The binding of the patient known by any of these refs (one per PATIENT_REF_KEY key)."""
    return Binding.maybe(
        await conn.fetchrow(
            "select * from phone_binding where patient_ref = any($1::text[]) order by bound_at desc limit 1",
            patient_refs,
        )
    )


async def end_binding(conn: asyncpg.Connection, patient_refs: list[str]) -> bool:
    return (
        await conn.execute("delete from phone_binding where patient_ref = any($1::text[])", patient_refs) != "DELETE 0"
    )


async def bind_phone(conn, patient_ref: str, phone_hash: str, phone_hint: str, phone_enc: str, source: str) -> None:
    await conn.execute(
        "insert into phone_binding(patient_ref, phone_hash, phone_hint, phone_enc, source)"
        " values ($1, $2, $3, $4, $5) on conflict (patient_ref) do update set phone_hash = excluded.phone_hash,"
        " phone_hint = excluded.phone_hint, phone_enc = excluded.phone_enc, source = excluded.source,"
        " bound_at = now()",
        patient_ref,
        phone_hash,
        phone_hint,
        phone_enc,
        source,
    )


async def lock_number(conn, phone_hash: str) -> None:
    """Serialise code requests for one number (over all its letters) until the transaction ends, so
    that concurrent requests cannot all pass the per-number cap. Keyed on the number's keyed hash."""
    await db.lock_named(conn, f"portal-number:{phone_hash}")


# Decoys (challenge.decoy) are gone: a wrong number is told. Replicas of the previous release may still
# write one while the new release rolls out, so reads skip them until the next release drops the column
# (migrations/0080_no_decoys.sql).
REAL = "not decoy"


async def send_counts(
    conn, message_id: uuid.UUID, phone_hashes: list[str], now: datetime, *, per_number: bool
) -> SendCounts:
    """What the send waits need. ``per_number``: the message's own waits count only the codes of this
    number (a number on file changed by the secretariat starts afresh); the wait between two codes starts
    from the last one whose SMS did not fail. ``phone_hashes``: the number's hash
    under every PORTAL_SECRET_KEY key, so rows written before a key rotation still count."""
    mine = f"message_id = $1 and (not $4 or phone_hash = any($2::text[])) and {REAL}"
    return SendCounts.from_row(
        await conn.fetchrow(
            "select"
            # An SMS that could not be delivered does not hold back the next one (the caps still count it).
            f" (select max(created_at) from challenge where {mine} and not sms_failed) as last_sent,"
            f" (select count(*) from challenge where {mine} and created_at > $3::timestamptz - interval '1 hour') as hour_n,"
            f" (select min(created_at) from challenge where {mine} and created_at > $3::timestamptz - interval '1 hour')"
            "   as hour_oldest,"
            f" (select count(*) from challenge where phone_hash = any($2::text[]) and {REAL}"
            "   and created_at > $3::timestamptz - interval '1 day') as day_n,"
            f" (select min(created_at) from challenge where phone_hash = any($2::text[]) and {REAL}"
            "   and created_at > $3::timestamptz - interval '1 day')"
            "   as day_oldest",
            message_id,
            phone_hashes,
            now,
            per_number,
        )
    )


async def has_challenge(conn, message_id: uuid.UUID, *, used: bool = False) -> bool:
    """Whether a code was ever requested (``used``: ever verified) for this message."""
    return bool(
        await conn.fetchval(
            f"select exists(select 1 from challenge where message_id = $1 and {REAL}"
            " and ($2 = false or status = 'used'))",
            message_id,
            used,
        )
    )


async def insert_challenge(
    conn,
    *,
    challenge_id,
    message_id,
    code_hash,
    phone_hash,
    phone_hint,
    phone_enc,
    bind_source,
    created_at,
    expires_at,
) -> None:
    # A new code does not end the earlier ones: each works until it expires (the patient may type the
    # first SMS's code after asking for a second); a right code ends them all (use_challenge).
    await conn.execute(
        "insert into challenge(id, message_id, code_hash, phone_hash, phone_hint, phone_enc, bind_source,"
        " created_at, expires_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        challenge_id,
        message_id,
        code_hash,
        phone_hash,
        phone_hint,
        phone_enc,
        bind_source,
        created_at,
        expires_at,
    )


async def latest_challenge(conn, message_id: uuid.UUID) -> Challenge | None:
    """The message's latest code."""
    return Challenge.maybe(
        await conn.fetchrow(
            f"select * from challenge where message_id = $1 and {REAL} order by created_at desc limit 1", message_id
        )
    )


async def recent_challenges(conn, message_id: uuid.UUID, since: datetime, *, lock: bool = False) -> list[Challenge]:
    """The message's codes sent since ``since``, latest first (at most 50: the send caps keep it far below)."""
    rows = await conn.fetch(
        f"select * from challenge where message_id = $1 and created_at > $2 and {REAL}"
        " order by created_at desc limit 50" + (" for update" if lock else ""),
        message_id,
        since,
    )
    return [Challenge.from_row(r) for r in rows]


async def record_wrong_codes(conn, challenge_ids: list[uuid.UUID], max_wrong: int) -> dict[uuid.UUID, int]:
    """One more wrong entry on each of these codes (dead at ``max_wrong``); returns each one's new count."""
    rows = await conn.fetch(
        "update challenge set wrong = wrong + 1, status = case when wrong + 1 >= $2 then 'dead' else status end"
        " where id = any($1::uuid[]) returning id, wrong",
        challenge_ids,
        max_wrong,
    )
    return {r["id"]: r["wrong"] for r in rows}


async def add_failure(conn, message_id: uuid.UUID) -> int:
    """Count one failure (wrong code, wrong number) against the message; returns the new total."""
    return int(
        await conn.fetchval(
            "update message set failed_checks = failed_checks + 1 where message_id = $1 returning failed_checks",
            message_id,
        )
    )


async def lock_message(conn, message_id: uuid.UUID, until: datetime) -> None:
    await conn.execute("update message set locked_until = $2 where message_id = $1", message_id, until)


async def unlock_message(conn, message_id: uuid.UUID) -> None:
    await conn.execute("update message set failed_checks = 0, locked_until = null where message_id = $1", message_id)


async def open_refs(conn, patient_refs: list[str]) -> list[str]:
    """The refs under which the patient has messages still open."""
    return [
        r["patient_ref"]
        for r in await conn.fetch(
            "select distinct patient_ref from message where patient_ref = any($1::text[]) and state = 'active'",
            patient_refs,
        )
    ]


async def set_number_on_file(conn, patient_ref: str, *, phone_hash: str, phone_hint: str, phone_enc: str) -> None:
    """A corrected number for the patient's open messages under this ref; codes already sent to the old
    number die."""
    await conn.execute(
        "update message set phone_hash = $2, phone_hint = $3, phone_enc = $4 where patient_ref = $1"
        " and state = 'active'",
        patient_ref,
        phone_hash,
        phone_hint,
        phone_enc,
    )
    await conn.execute(
        "update challenge set status = 'dead' where status = 'active' and message_id in"
        " (select message_id from message where patient_ref = $1)",
        patient_ref,
    )


async def use_challenge(conn, challenge_id) -> None:
    """The right code: used, and the message's other live codes end with it (a code opens once)."""
    await conn.execute("update challenge set status = 'used' where id = $1", challenge_id)
    await conn.execute(
        "update challenge set status = 'dead' where status = 'active'"
        " and message_id = (select message_id from challenge where id = $1)",
        challenge_id,
    )
    await conn.execute(
        "update message set failed_checks = 0, locked_until = null"
        " where message_id = (select message_id from challenge where id = $1)",
        challenge_id,
    )


async def mark_sms_sent(conn, challenge_id, at) -> None:
    await conn.execute("update challenge set sms_sent_at = coalesce(sms_sent_at, $2) where id = $1", challenge_id, at)


async def mark_sms_failed(conn, challenge_id) -> None:
    await conn.execute("update challenge set sms_failed = true, status = 'dead' where id = $1", challenge_id)


async def insert_session(conn, token_hash: str, message_id: uuid.UUID) -> None:
    await conn.execute("insert into session(token_hash, message_id) values ($1, $2)", token_hash, message_id)


async def touch_session(
    conn, token_hashes: list[str], message_id: uuid.UUID, idle_s: int, absolute_s: int
) -> str | None:
    """The hash of the live session for this message, its idle time refreshed; None if absent or timed out."""
    return await conn.fetchval(
        "update session set last_seen_at = now() where token_hash = any($1::text[]) and message_id = $2 and ended_at is null"
        " and last_seen_at > now() - make_interval(secs => $3) and created_at > now() - make_interval(secs => $4)"
        " returning token_hash",
        token_hashes,
        message_id,
        float(idle_s),
        float(absolute_s),
    )


async def end_session(conn, token_hash: str) -> None:
    await conn.execute("update session set ended_at = now() where token_hash = $1 and ended_at is null", token_hash)


async def pdf_released(conn, message_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("select true from release where message_id = $1 and kind = 'pdf'", message_id))


_PAPER_STEP = {"requested": "requested_at", "printed": "printed_at", "posted": "posted_at", "returned": "returned_at"}


async def record_paper(conn, message_id: uuid.UUID, step: str, reason: str | None, at: datetime) -> None:
    """A step of the message's paper copy (postal.progress). 'cancelled' forgets the request: paper may be
    asked again. A redelivered step keeps its first time."""
    if step == "cancelled":
        await conn.execute(
            "update paper set requested_at = null, reason = null, updated_at = now() where message_id = $1", message_id
        )
        return
    column = _PAPER_STEP[step]
    await conn.execute(
        f"insert into paper as p (message_id, reason, {column}) values ($1, $2, $3)"
        f" on conflict (message_id) do update set {column} = coalesce(p.{column}, $3),"
        " reason = coalesce($2, p.reason), updated_at = now()",
        message_id,
        reason,
        at,
    )


async def paper_of(conn, message_id: uuid.UUID):
    """The message's paper copy as reported so far, or None."""
    return await conn.fetchrow("select * from paper where message_id = $1", message_id)


async def request_postal(conn, message_id: uuid.UUID, at) -> bool:
    """Record the patient's request for the post; False if it was already recorded."""
    status = await conn.execute(
        "update message set postal_requested_at = $2 where message_id = $1 and postal_requested_at is null",
        message_id,
        at,
    )
    return status == "UPDATE 1"


async def record_release(conn, message_id: uuid.UUID, kind: str) -> bool:
    status = await conn.execute(
        "insert into release(message_id, kind) values ($1, $2) on conflict do nothing", message_id, kind
    )
    return status == "INSERT 0 1"


async def audit(
    conn, message_id: uuid.UUID | None, action: str, outcome: str, client_hash: str | None, detail: str | None = None
) -> None:
    # Append-only for this role: INSERT is all it may do on the audit (deploy/postgres/init.sql).
    await conn.execute(
        "insert into portal_audit.access_audit(message_id, action, outcome, client_hash, detail)"
        " values ($1, $2, $3, $4, $5)",
        message_id,
        action,
        outcome,
        client_hash,
        detail,
    )


# A revocation whose message never came (dead-lettered, say) is kept this long: a message replayed from
# a dead-letter queue within it is stored revoked; one replayed later is past its expiry but for a letter
# booked more than a year ahead.
REVOKED_EARLY_KEPT_DAYS = 400


def retention_rules(message_days: int, binding_days: int, audit_days: int) -> list[retention.RetentionRule]:
    """What the portal deletes once past its retention (docs/retention.md). A paper report whose message never
    came goes the same time after its last step; the access audit through portal_audit.prune()."""
    return [
        retention.Rule(
            "message",
            "expires_at",
            message_days,
            key="message_id",
            children=(
                ("challenge", "message_id"),
                ("session", "message_id"),
                ("release", "message_id"),
                ("paper", "message_id"),
            ),
        ),
        retention.Rule(
            "paper",
            "updated_at",
            message_days,
            key="message_id",
            where="not exists (select from message m where m.message_id = paper.message_id)",
        ),
        retention.Rule("phone_binding", "bound_at", binding_days, key="patient_ref"),
        retention.Rule("revoked_early", "revoked_at", REVOKED_EARLY_KEPT_DAYS, key="message_id"),
        retention.AuditRule("portal_audit", "access_audit", audit_days),
    ]


_PATIENTS = "convocation_id = any($1) or patient_ref = any($2) or patient_refs && $2"
_MESSAGES = f"message_id in (select message_id from message where {_PATIENTS})"
ERASE = (
    erasure.Erase("challenge", _MESSAGES),
    erasure.Erase("session", _MESSAGES),
    erasure.Erase("release", _MESSAGES),
    erasure.Erase("paper", _MESSAGES),
    erasure.Erase("message", _PATIENTS),
    erasure.Erase("phone_binding", "patient_ref = any($2)"),
)


async def erase(conn: asyncpg.Connection, convocation_ids: list[uuid.UUID], patient_refs: list[str]) -> int:
    """Everything the portal holds about the patient: messages (sealed documents and numbers among them),
    codes, sessions, downloads, paper reports, the verified number, and their access audit rows made
    anonymous (portal_audit.erase: the rows stay, without the message or the client)."""
    message_ids = [
        r["message_id"]
        for r in await conn.fetch(f"select message_id from message where {_PATIENTS}", convocation_ids, patient_refs)
    ]
    rows = await erasure.erase(conn, ERASE, convocation_ids, patient_refs)
    return rows + await conn.fetchval("select portal_audit.erase($1::uuid[])", message_ids)
