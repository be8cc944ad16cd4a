"""The issuer's handlers on the real Postgres, one transaction each as the consumer runs them: the rows,
history, outbox events and funnel counts each event leaves, and how many statements it takes to get
there (each one a round trip to the database: the issuer's largest cost per convocation)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from devstack.sample import convocation_event, sample_pdf
from issuer import domain, store
from issuer.app import MIGRATIONS
from issuer.handlers import IssuerHandlers
from issuer.settings import IssuerSettings
from shared import crypto
from shared.consumer import Delivery, parse_envelope
from shared.contracts import (
    ConvocationCancelledV1,
    ConvocationCreatedV1,
    DocumentReleasedV1,
    EmailFailedV1,
    EmailSentV1,
    PostalPostedV1,
    PostalPrintedV1,
    PostalReturnedV1,
    StaffActionRequestedV1,
    envelope,
)
from shared.db import migrate
from shared.metrics import FUNNEL, FUNNEL_STAGES, counted_after_commit
from tests.integration.conftest import throwaway_schema
from tests.opener import open_letters

QUEUE = "itest.issuer"


@pytest.fixture(scope="module")
async def pool(test_database):
    """A throw-away schema with the issuer's real migrations (the running stack never sees it)."""
    async with throwaway_schema(test_database, "issuer_itest") as (name, _, pool):
        await migrate(pool, name, MIGRATIONS)
        yield pool


class Counted:
    """The connection a handler gets, counting the statements it sends (one round trip each); ``hook``,
    if given, is awaited before and after each one (to hold a transaction at a chosen point)."""

    def __init__(self, conn, hook=None) -> None:
        self._conn, self.statements, self._hook = conn, [], hook

    def __getattr__(self, name):
        method = getattr(self._conn, name)
        if name not in ("execute", "fetch", "fetchrow", "fetchval", "executemany"):
            return method

        async def counted(query, *args, **kwargs):
            self.statements.append(query)
            if self._hook:
                await self._hook(query, "before")
            result = await method(query, *args, **kwargs)
            if self._hook:
                await self._hook(query, "after")
            return result

        return counted


def funnel() -> dict[str, float]:
    return {stage: FUNNEL.labels(stage)._value.get() for stage in FUNNEL_STAGES}


class Run:
    """One handled event: its statements, the outbox events it added and the funnel stages it counted."""

    def __init__(self, statements, events, counted) -> None:
        self.statements, self.events, self.counted = statements, events, counted

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


async def handle(pool, handler, d: Delivery, hook=None) -> Run:
    """The handler in its own transaction, as shared/consumer.py runs it (begin and commit not counted)."""
    before = funnel()
    async with pool.acquire() as conn:
        last = await conn.fetchval("select coalesce(max(id), 0) from outbox")
        with counted_after_commit():
            await conn.execute("begin")
            counted = Counted(conn, hook)
            await handler(counted, d)
            await conn.execute("commit")
        events = [
            json.loads(r["body"]) for r in await conn.fetch("select body from outbox where id > $1 order by id", last)
        ]
    after = funnel()
    return Run(counted.statements, events, {s: after[s] - before[s] for s in FUNNEL_STAGES if after[s] != before[s]})


def created(**kwargs) -> Delivery:
    raw = convocation_event(pdf=sample_pdf(), **kwargs)
    return Delivery(parse_envelope(ConvocationCreatedV1, json.dumps(raw).encode(), QUEUE), 0, QUEUE)


def from_mailer(payload, *, attempt: int = 0) -> Delivery:
    return Delivery(envelope(payload, producer="mailer", correlation_id=payload.convocation_id), attempt, QUEUE)


def sent(row, *, at: datetime | None = None) -> Delivery:
    return from_mailer(
        EmailSentV1(
            message_id=row["message_id"],
            convocation_id=row["id"],
            smtp_message_id="<m@x>",
            accepted_at=at or datetime.now(timezone.utc),
        )
    )


async def state(pool, cid):
    row = await pool.fetchrow("select * from convocation where id = $1", cid)
    history = [
        r["status"]
        for r in await pool.fetch("select status from status_history where convocation_id = $1 order by id", cid)
    ]
    return row, history


@pytest.fixture(scope="module")
def issuer(key_store) -> IssuerHandlers:
    return IssuerHandlers(IssuerSettings(key_store_url=key_store))


async def test_a_new_convocation_is_sealed_in_two_statements_then_e_mailed_in_three(pool, issuer):
    d = created()
    cid = d.data.convocation_id
    run = await handle(pool, issuer.on_convocation_created, d)
    row, history = await state(pool, cid)
    assert (row["status"], row["superseded_count"], history) == ("sealed", 0, ["sealed"])
    # The letter for the portal and its link for the mailer, never in one event (docs/architecture.md#security).
    assert run.types == ["message.sealed", "email.requested", "convocation.status"]
    sealed, email, status = (e["data"] for e in run.events)
    assert sealed["message_id"] == email["message_id"] == status["message_id"] == str(row["message_id"])
    assert "for_mailer" not in sealed and not {"document_ciphertext", "details_ciphertext"} & email.keys()
    assert (status["status"], status["patient_ref"], status["department"], status["delivery"]) == (
        "sealed",
        row["patient_ref"],
        "cardiology",
        "email",
    )
    assert all(e["causation_id"] == str(d.envelope.event_id) for e in run.events)
    assert run.counted == {"created": 1, "sealed": 1}
    # Insert it with its history line, both events: two (were six; sealed before any statement, so no
    # read is needed to find that it is new).
    assert len(run.statements) == 2, run.statements

    run = await handle(pool, issuer.on_email_sent, sent(row))
    row, history = await state(pool, cid)
    assert (row["status"], history) == ("e-mailed", ["sealed", "e-mailed"])
    assert row["emailed_at"] is not None
    assert run.types == ["convocation.status"] and run.events[0]["data"]["status"] == "e-mailed"
    assert run.counted == {"e-mailed": 1}
    # Read, the status with its history line, the event: three (were five; the funnel needs no history
    # query for a convocation never superseded).
    assert len(run.statements) == 3, run.statements

    # A delayed retry's copy (no inbox) of e-mail sent again: stamped already, counted once.
    again = await handle(pool, issuer.on_email_sent, sent(row))
    assert (again.types, again.counted) == ([], {})
    assert (await state(pool, cid))[1] == ["sealed", "e-mailed"]


async def test_until_relayed_the_issuers_outbox_holds_both_halves_of_a_new_letter(pool, issuer):
    """The residue the threat model names (docs/architecture.md#threat-model): the letter and its link are
    written in one transaction, so from the commit until the relay publishes them (well under a second; a
    broker outage longer) the issuer's outbox opens the new letter with the issuer's own keys. Each row
    alone opens nothing, and the relay deletes each row once the broker confirmed it."""
    d = created()
    await handle(pool, issuer.on_convocation_created, d)
    rows = [
        bytes(r["body"])
        for r in await pool.fetch("select body from outbox order by id")
        if json.loads(r["body"])["causation_id"] == str(d.envelope.event_id)
    ]
    keys = {
        f"{name} {kid}": key
        for name, ring in issuer.settings
        if isinstance(ring, dict)
        for kid, key in ring.items()
        if isinstance(key, bytes)
    }
    assert [open_letters([row], keys) for row in rows] == [[], [], []]
    message_id = json.loads(rows[0])["data"]["message_id"]
    assert {o.message_id for o in open_letters(rows, keys) if o.how.startswith("the letter")} == {message_id}


async def test_a_superseding_convocation_counts_each_funnel_stage_once(pool, issuer):
    first = created()
    cid = first.data.convocation_id
    await handle(pool, issuer.on_convocation_created, first)
    old, _ = await state(pool, cid)
    await handle(pool, issuer.on_email_sent, sent(old))

    run = await handle(pool, issuer.on_convocation_created, created(convocation_id=cid))
    row, history = await state(pool, cid)
    assert row["message_id"] != old["message_id"]
    assert (row["status"], row["superseded_count"], row["emailed_at"]) == ("sealed", 1, None)
    assert history == ["sealed", "e-mailed", "superseded", "sealed"]
    assert run.types == [
        "message.revoked",
        "convocation.status",
        "message.sealed",
        "email.requested",
        "convocation.status",
    ]
    assert [e["data"].get("status") for e in run.events] == [None, "superseded", None, None, "sealed"]
    assert run.events[4]["data"]["message_id"] == str(row["message_id"])
    assert run.counted == {}  # the same convocation: created and sealed were counted the first time
    # Insert (conflict), read, pending reissues, revoke, replace, events (were 12).
    assert len(run.statements) == 6, run.statements

    stale = await handle(pool, issuer.on_email_sent, sent(old))
    assert (stale.types, stale.counted, (await state(pool, cid))[0]["status"]) == ([], {}, "sealed")
    run = await handle(pool, issuer.on_email_sent, sent(row))
    assert (await state(pool, cid))[1][-1] == "e-mailed"
    assert run.types == ["convocation.status"] and run.counted == {}  # e-mailed once per convocation
    assert len(run.statements) == 5, run.statements  # + the history query and the reissue action (were 6)


async def test_two_deliveries_of_a_new_convocation_at_once_act_as_one_superseding_the_other(pool, issuer):
    """Two convocation.created for the same new id (two event ids: the inbox lets both through), handled at
    the same time as the consumer's prefetch allows: the first inserts it, the second's
    insert waits for the first to commit and finds the row there. The second must then supersede the first
    message exactly as if it had come later: one current message, the first revoked, one e-mail each."""
    first = created()
    cid = first.data.convocation_id
    second = created(convocation_id=cid)
    first_inserted, second_inserting = asyncio.Event(), asyncio.Event()

    async def hold_first(query, phase):
        # The first transaction keeps its new row uncommitted until the second is about to insert it too.
        if phase == "after" and "insert into convocation" in query:
            first_inserted.set()
            await second_inserting.wait()

    async def follow_second(query, phase):
        # The second inserts only once the first has inserted (and conflicts, whether its insert reaches
        # the server before or after the first commits).
        if phase == "before" and not first_inserted.is_set():
            await first_inserted.wait()
        if phase == "before" and "insert into convocation" in query:
            second_inserting.set()

    before = funnel()
    runs = await asyncio.wait_for(
        asyncio.gather(
            handle(pool, issuer.on_convocation_created, first, hold_first),
            handle(pool, issuer.on_convocation_created, second, follow_second),
        ),
        timeout=30,
    )
    after = funnel()
    assert {s: after[s] - before[s] for s in FUNNEL_STAGES if after[s] != before[s]} == {"created": 1, "sealed": 1}

    row, history = await state(pool, cid)
    outbox = [json.loads(r["body"]) for r in await pool.fetch("select body from outbox order by id")]
    by_first, by_second = (
        [e for e in outbox if e["causation_id"] == str(d.envelope.event_id)] for d in (first, second)
    )
    assert [e["type"] for e in by_first] == ["message.sealed", "email.requested", "convocation.status"]
    assert [e["type"] for e in by_second] == [
        "message.revoked",
        "convocation.status",
        "message.sealed",
        "email.requested",
        "convocation.status",
    ]
    first_message = by_first[0]["data"]["message_id"]
    revoked, superseded, sealed, _, status = (e["data"] for e in by_second)
    assert (revoked["message_id"], revoked["reason"]) == (first_message, "superseded")
    assert (superseded["status"], superseded["message_id"]) == ("superseded", first_message)
    assert sealed["message_id"] == status["message_id"] == str(row["message_id"]) != first_message
    assert status["status"] == "sealed"
    assert (row["status"], row["superseded_count"], history) == ("sealed", 1, ["sealed", "superseded", "sealed"])
    sealed_ids = [
        e["data"]["message_id"]
        for e in outbox
        if e["type"] == "email.requested" and e["data"]["convocation_id"] == str(cid)
    ]
    assert sealed_ids == [first_message, str(row["message_id"])]  # one e-mail each, the second replacing
    # The common path takes two statements; the second, a known convocation by then, as any superseding
    # one: insert (conflict, after waiting for the first's commit), read (locked), pending reissues,
    # revoke, replace, events.
    assert len(runs[0].statements) == 2, runs[0].statements
    assert len(runs[1].statements) == 6, runs[1].statements


async def test_a_postal_convocation_goes_to_the_print_room_at_once(pool, issuer):
    d = created(delivery="postal")
    run = await handle(pool, issuer.on_convocation_created, d)
    row, history = await state(pool, d.data.convocation_id)
    # The copy stays until the print room reports the letter printed (it may be switched back to e-mail).
    assert (row["status"], row["postal_reason"], row["print_copy"] is not None, history) == (
        "postal",
        "preference",
        True,
        ["sealed", "postal"],
    )
    assert run.types == [
        "message.sealed",
        "convocation.status",
        "postal.requested",
        "convocation.status",
        "postal.progress",
    ]
    assert [e["data"].get("status") for e in run.events] == [None, "sealed", None, "postal", None]
    assert (run.events[2]["data"]["message_id"], run.events[4]["data"]["reason"]) == (
        str(row["message_id"]),
        "preference",
    )
    assert run.events[3]["data"]["detail"] == "preference"
    assert run.counted == {"created": 1, "sealed": 1, "paper": 1}
    assert len(run.statements) == 3, run.statements  # + the posting with its history line (were 12)


async def test_a_bounce_posts_the_letter_and_a_download_after_it_is_only_stamped(pool, issuer):
    d = created()
    cid = d.data.convocation_id
    await handle(pool, issuer.on_convocation_created, d)
    row, _ = await state(pool, cid)
    run = await handle(
        pool,
        issuer.on_email_failed,
        from_mailer(
            EmailFailedV1(
                message_id=row["message_id"],
                convocation_id=cid,
                smtp_code=550,
                reason="recipient-refused 5.1.1",
                failed_at=datetime.now(timezone.utc),
            )
        ),
    )
    row, history = await state(pool, cid)
    assert (row["status"], row["postal_reason"], history) == (
        "postal-fallback",
        "email-failed",
        ["sealed", "bounced", "postal-fallback"],
    )
    assert run.types == ["convocation.status", "postal.requested", "convocation.status", "postal.progress"]
    assert run.counted == {"bounced": 1, "paper": 1}
    assert len(run.statements) == 4, run.statements  # read, bounced, posted, events (were 12)

    run = await handle(pool, issuer.on_document_released, released(row))
    row, history = await state(pool, cid)
    assert (row["status"], row["downloaded_at"] is not None, history[-1]) == ("downloaded", True, "downloaded")
    assert run.types == ["convocation.status"] and run.counted == {"downloaded": 1}


def released(row) -> Delivery:
    return Delivery(
        envelope(
            DocumentReleasedV1(
                message_id=row["message_id"], convocation_id=row["id"], released_at=datetime.now(timezone.utc)
            ),
            producer="access-portal",
            correlation_id=row["id"],
        ),
        0,
        QUEUE,
    )


async def test_a_download_drops_the_print_copy_and_a_later_e_mail_is_only_stamped(pool, issuer):
    d = created()
    cid = d.data.convocation_id
    await handle(pool, issuer.on_convocation_created, d)
    row, _ = await state(pool, cid)
    assert row["print_copy"] is not None
    run = await handle(pool, issuer.on_document_released, released(row))
    row, history = await state(pool, cid)
    assert (row["status"], row["print_copy"], history) == ("downloaded", None, ["sealed", "downloaded"])
    assert run.types == ["convocation.status"] and run.counted == {"downloaded": 1}
    assert len(run.statements) == 3, run.statements  # the print copy dropped with the status (were 6)

    run = await handle(pool, issuer.on_email_sent, sent(row))  # the mailer's report came after the download
    row, history = await state(pool, cid)
    assert (row["status"], row["emailed_at"] is not None, history) == ("downloaded", True, ["sealed", "downloaded"])
    assert (run.types, run.counted) == ([], {"e-mailed": 1})
    assert len(run.statements) == 2, run.statements  # read, stamp: no event, so no outbox statement


async def test_a_cancelled_convocation_is_revoked(pool, issuer):
    d = created(starts_at=datetime.now(timezone.utc) + timedelta(days=3))
    cid = d.data.convocation_id
    await handle(pool, issuer.on_convocation_created, d)
    run = await handle(
        pool,
        issuer.on_convocation_cancelled,
        Delivery(
            envelope(
                ConvocationCancelledV1(convocation_id=cid, reason="rescheduled"),
                producer="hospital-his",
                correlation_id=cid,
            ),
            0,
            QUEUE,
        ),
    )
    row, history = await state(pool, cid)
    assert (row["status"], row["print_copy"], row["cancelled_at"] is not None, history) == (
        "cancelled",
        None,
        True,
        ["sealed", "cancelled"],
    )
    assert run.types == ["message.revoked", "convocation.status"]
    assert len(run.statements) == 3, run.statements  # (were 6)


async def test_a_request_to_send_again_counts_as_waiting_until_answered_or_not_answerable_any_more(pool, issuer):
    """What the unanswered-request alert reads: a request waits until a republished convocation uses it,
    or until the convocation is cancelled (nobody will answer it then, and nobody needs to)."""
    now = datetime.now(timezone.utc)
    first, second = created(), created()
    for d in (first, second):
        await handle(pool, issuer.on_convocation_created, d)
    async with pool.acquire() as conn:
        before, _ = await store.reissues_waiting(conn, now, domain.CLOSED)
        for d, hours in ((first, 2), (second, 1)):
            await store.add_reissue_request(
                conn,
                action_id=uuid.uuid4(),
                convocation_id=d.data.convocation_id,
                reason="resend",
                email_sealed=None,
                requested_at=now - timedelta(hours=hours),
            )
        waiting, oldest = await store.reissues_waiting(conn, now, domain.CLOSED)
        assert (waiting, oldest) == (before + 2, now - timedelta(hours=2))
    await handle(
        pool,
        issuer.on_convocation_cancelled,
        Delivery(
            envelope(
                ConvocationCancelledV1(convocation_id=first.data.convocation_id, reason="rescheduled"),
                producer="hospital-his",
                correlation_id=first.data.convocation_id,
            ),
            0,
            QUEUE,
        ),
    )
    async with pool.acquire() as conn:
        assert await store.reissues_waiting(conn, now, domain.CLOSED) == (before + 1, now - timedelta(hours=1))
        await store.consume_reissues(conn, second.data.convocation_id, uuid.uuid4(), now)
        assert (await store.reissues_waiting(conn, now, domain.CLOSED))[0] == before


async def test_the_handlers_read_every_column_but_the_print_rooms_copy(pool):
    """store.ROW names the columns by hand (the copy stays in the database until the letter is posted):
    a column a migration adds must be added there too."""
    from issuer import store

    columns = {
        r["column_name"]
        for r in await pool.fetch(
            "select column_name from information_schema.columns where table_schema = current_schema()"
            " and table_name = 'convocation'"
        )
    }
    read = {part.strip().split(" as ")[-1] for part in store.ROW.split(",")}
    assert read == columns - {"print_copy"} | {"has_print_copy"}


def from_print_room(payload) -> Delivery:
    return Delivery(envelope(payload, producer="print-room", correlation_id=payload.convocation_id), 0, QUEUE)


def staff(row, action: str) -> Delivery:
    return Delivery(
        envelope(
            StaffActionRequestedV1(
                action_id=uuid.uuid4(),
                convocation_id=row["id"],
                message_id=row["message_id"],
                action=action,
                department="cardiology",
                requested_by="u-1",
            ),
            producer="secretariat",
            correlation_id=row["id"],
        ),
        0,
        QUEUE,
    )


async def test_the_print_rooms_reports_become_hospital_statuses_and_the_copy_goes_once_printed(pool, issuer):
    d = created(delivery="postal", birth_date="1957-03-21")
    cid = d.data.convocation_id
    run = await handle(pool, issuer.on_convocation_created, d)
    sealed_status = run.events[1]["data"]
    patient = crypto.open_field(
        IssuerSettings().secretariat_field_key,
        sealed_status["for_secretariat"],
        context=crypto.field_context("convocation.status", uuid.UUID(sealed_status["message_id"]), "secretariat"),
    )
    assert patient == {
        "name": "Marie Dupont",
        "birth_date": "1957-03-21",
        "place": "Bâtiment Gustave Julliard, 2e étage",
        "department_name": "Cardiologie",
        "phone_hint": "+41 79 *** ** 67",
    }
    row, _ = await state(pool, cid)
    at = datetime.now(timezone.utc)
    run = await handle(
        pool,
        issuer.on_postal_printed,
        from_print_room(PostalPrintedV1(convocation_id=cid, message_id=row["message_id"], at=at)),
    )
    assert run.types == ["convocation.status", "postal.progress"]
    assert (run.events[0]["data"]["status"], run.events[1]["data"]["step"]) == ("printed", "printed")
    again = await handle(
        pool,
        issuer.on_postal_printed,
        from_print_room(
            PostalPrintedV1(convocation_id=cid, message_id=row["message_id"], at=at + timedelta(minutes=1))
        ),
    )
    assert again.events == []  # reported twice: once
    await handle(
        pool,
        issuer.on_postal_posted,
        from_print_room(PostalPostedV1(convocation_id=cid, message_id=row["message_id"], at=at + timedelta(hours=2))),
    )
    run = await handle(
        pool,
        issuer.on_postal_returned,
        from_print_room(
            PostalReturnedV1(
                convocation_id=cid, message_id=row["message_id"], at=at + timedelta(days=3), reason="moved"
            )
        ),
    )
    assert (run.events[0]["data"]["status"], run.events[0]["data"]["detail"]) == ("returned", "moved")
    row, history = await state(pool, cid)
    assert (row["status"], row["print_copy"], history) == (
        "returned",
        None,
        ["sealed", "postal", "printed", "posted", "returned"],
    )
    stale = await handle(
        pool,
        issuer.on_postal_posted,
        from_print_room(PostalPostedV1(convocation_id=cid, message_id=uuid.uuid4(), at=at)),
    )
    assert stale.events == []  # about a letter this convocation no longer has


async def test_a_paper_letter_not_printed_goes_back_to_e_mail_through_the_hospital_and_can_go_on_paper_later(
    pool, issuer
):
    d = created()
    cid = d.data.convocation_id
    await handle(pool, issuer.on_convocation_created, d)
    row, _ = await state(pool, cid)
    await handle(pool, issuer.on_email_sent, sent(row))
    await handle(pool, issuer.on_staff_action, staff(row, "post"))
    row, _ = await state(pool, cid)
    run = await handle(pool, issuer.on_staff_action, staff(row, "email-instead"))
    assert run.types == ["postal.cancelled", "convocation.status", "postal.progress", "convocation.reissue.requested"]
    assert (
        run.events[0]["data"]["reason"],
        run.events[1]["data"]["status"],
        run.events[2]["data"]["step"],
        run.events[3]["data"]["reason"],
    ) == ("email-instead", "postal-cancelled", "cancelled", "email-instead")
    row, history = await state(pool, cid)
    assert history[-1] == "postal-cancelled" and row["print_copy"] is not None
    # The hospital system never answers: the secretariat may post it after all, with the copy kept.
    run = await handle(pool, issuer.on_staff_action, staff(row, "post"))
    assert run.types == ["postal.requested", "convocation.status", "postal.progress"]
    # Printed now: switching back is no longer possible, and a withdrawal does not stop the paper.
    row, _ = await state(pool, cid)
    await handle(
        pool,
        issuer.on_postal_printed,
        from_print_room(
            PostalPrintedV1(convocation_id=cid, message_id=row["message_id"], at=datetime.now(timezone.utc))
        ),
    )
    row, _ = await state(pool, cid)
    assert (await handle(pool, issuer.on_staff_action, staff(row, "email-instead"))).events == []
    run = await handle(pool, issuer.on_staff_action, staff(row, "withdraw"))
    assert run.types == ["message.revoked", "convocation.status"]


async def test_a_letter_withdrawn_before_it_is_printed_is_dropped_by_the_print_room(pool, issuer):
    d = created(delivery="postal")
    await handle(pool, issuer.on_convocation_created, d)
    row, _ = await state(pool, d.data.convocation_id)
    run = await handle(pool, issuer.on_staff_action, staff(row, "withdraw"))
    assert run.types == [
        "postal.cancelled",
        "convocation.status",
        "postal.progress",
        "message.revoked",
        "convocation.status",
    ]
    assert run.events[0]["data"] == {
        "convocation_id": str(row["id"]),
        "message_id": str(row["message_id"]),
        "reason": "withdrawn",
    }
