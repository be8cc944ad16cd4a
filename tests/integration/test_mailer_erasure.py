"""The mailer's side of an erasure on the real Postgres: patient.erased deletes the patient's e-mail rows, their
notices and bounce tokens and the retry copy waiting in the outbox, and confirms with counts only; a retry copy
the broker was already holding (of the link e-mail or of a notice) then sends nothing and writes nothing."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from devstack.contracts.examples import example_payload
from mailer import store
from mailer.app import MIGRATIONS
from mailer.handlers import MailerHandlers
from mailer.settings import MailerSettings
from mailer.smtp import SmtpSender
from shared.consumer import Delivery
from shared.contracts import EmailRequestedV1, PatientErasedV1, ReminderRequestedV1, envelope
from shared.db import migrate
from shared.outbox import add_event
from tests.integration.conftest import throwaway_schema

EXCHANGE = "itest"


@pytest.fixture(scope="module")
async def pool(test_database):
    async with throwaway_schema(test_database, "mailer_itest") as (name, _, pool):
        await migrate(pool, name, MIGRATIONS)
        yield pool


def mailer() -> MailerHandlers:
    settings = MailerSettings(events_exchange=EXCHANGE)
    return MailerHandlers(settings, SmtpSender(settings))


async def test_an_erased_patients_e_mails_go_and_a_retry_already_on_its_way_sends_nothing(pool):
    handlers = mailer()
    sealed = example_payload(EmailRequestedV1).model_copy(
        update={"message_id": uuid.uuid4(), "convocation_id": uuid.uuid4()}
    )
    mid, cid = sealed.message_id, sealed.convocation_id
    link = envelope(sealed, producer="issuer", correlation_id=cid)
    async with pool.acquire() as conn, conn.transaction():
        # The link e-mail failed once (the relay said 451): its row and its retry copy, waiting.
        await store.record_retry(conn, mid, cid, f"<{mid}@hug.test>", 1, 451, "try again later")
        await store.add_bounce_token(conn, uuid.uuid4().bytes, mid, "link", "k1:hash")
        await store.record_notice(conn, mid, "withdrawn", "skipped", datetime.now(timezone.utc))
        await add_event(
            conn, link, exchange=f"{EXCHANGE}.retry", routing_key="itest.mailer.email.requested.v1.retry.5s"
        )

    erasure_id = uuid.uuid4()
    erased = envelope(
        PatientErasedV1(
            erasure_id=erasure_id, patient_refs=["k1:ref"], convocation_ids=[cid], at=datetime.now(timezone.utc)
        ),
        producer="issuer",
        correlation_id=erasure_id,
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.on_patient_erased(conn, Delivery(erased, 0, "itest.mailer.patient.erased.v1"))
    for table in ("email", "notice", "bounce_token"):
        assert await pool.fetchval(f"select count(*) from {table} where message_id = $1", mid) == 0, table
    assert await pool.fetchval("select count(*) from outbox where correlation_id = $1", cid) == 0
    confirmed = json.loads(
        await pool.fetchval(
            "select convert_from(body, 'UTF8') from outbox where event_type = 'patient.erasure.confirmed'"
            " and correlation_id = $1",
            erasure_id,
        )
    )
    assert (confirmed["producer"], confirmed["data"]["service"], confirmed["data"]["rows"]) == ("mailer", "mailer", 4)

    reminder = envelope(
        ReminderRequestedV1(
            message_id=mid, convocation_id=cid, paper_deadline=datetime.now(timezone.utc) + timedelta(days=1)
        ),
        producer="issuer",
        correlation_id=cid,
    )
    async with pool.acquire() as conn, conn.transaction():
        # The copies the broker was holding come back: they find no row, and leave none.
        await handlers.on_email_requested(conn, Delivery(link, 1, "itest.mailer.email.requested.v1"))
        await handlers.on_reminder_requested(conn, Delivery(reminder, 1, "itest.mailer.reminder.requested.v1"))
    for table in ("email", "notice"):
        assert await pool.fetchval(f"select count(*) from {table} where message_id = $1", mid) == 0, table
    assert await pool.fetchval("select count(*) from outbox where correlation_id = $1", cid) == 0
