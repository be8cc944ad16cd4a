"""Issue #3: paper paths, revocation, supersession, expiry, delivery reports, SMTP failures."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pypdf import PdfReader

from issuer.domain import print_room_context
from shared import crypto
from shared.settings import _decode_key, dev_key
from tests.e2e.conftest import code_of, random_mobile
from tests.patient import PatientClient, find_link
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
PRINT_ROOM_KEY = _decode_key(dev_key("print-room"))


def statuses(events: list[dict]) -> list[str]:
    return [e["data"]["status"] for e in events]


def open_print_copy(event: dict) -> dict:
    return json.loads(
        crypto.open_for_recipient(
            PRINT_ROOM_KEY,
            event["data"]["for_print_room"],
            context=print_room_context(uuid.UUID(event["data"]["convocation_id"])),
        )
    )


async def test_a_patient_who_keeps_paper_gets_no_email_and_the_print_room_gets_the_letter(chain):
    event = chain.event(delivery="postal")
    cid = event["data"]["convocation_id"]
    await chain.publish(event)
    posted = await chain.postal(cid)
    assert posted[0]["data"]["reason"] == "preference"
    letter = open_print_copy(posted[0])
    assert base64.b64decode(letter["document_pdf_base64"]) == base64.b64decode(event["data"]["document_pdf_base64"])
    assert letter["patient_id"] == event["data"]["patient"]["id"]
    reports = await chain.upstream("convocation.status.v1", cid, until=lambda es: "postal" in statuses(es))
    assert statuses(reports) == ["sealed", "postal"]
    assert chain.emails_to(event["data"]["patient"]["email"]) == []
    assert await chain.status(cid) == "postal"


async def test_a_hard_bounce_falls_back_to_paper_once(chain):
    event = chain.event()
    cid = event["data"]["convocation_id"]
    chain.inbox.smtp_script(["550 5.1.1 No such user here"])
    await chain.publish(event)
    reports = await chain.upstream("convocation.status.v1", cid, until=lambda es: "postal-fallback" in statuses(es))
    assert statuses(reports) == ["sealed", "bounced", "postal-fallback"]
    bounced = next(e for e in reports if e["data"]["status"] == "bounced")
    assert bounced["data"]["detail"].startswith("550")
    posted = await chain.postal(cid)
    assert [p["data"]["reason"] for p in posted] == ["email-failed"]
    assert open_print_copy(posted[0])["patient_name"] == "Marie Dupont"
    assert chain.emails_to(event["data"]["patient"]["email"]) == []
    email = await chain.db.fetchrow(
        "select status, last_code from mailer.email where convocation_id = $1", uuid.UUID(cid)
    )
    assert (email["status"], email["last_code"]) == ("failed", 550)


async def test_a_temporary_smtp_failure_is_retried_and_gives_exactly_one_email(chain):
    event = chain.event()
    address = event["data"]["patient"]["email"]
    chain.inbox.smtp_script(["451 4.3.0 Mailbox busy, try again later"])
    await chain.publish(event)
    await chain.email_to(address)
    await chain.wait_status(event["data"]["convocation_id"], "e-mailed")
    assert len(chain.emails_to(address)) == 1
    row = await chain.db.fetchrow(
        "select status, attempts from mailer.email where convocation_id = $1",
        uuid.UUID(event["data"]["convocation_id"]),
    )
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_a_cancelled_convocation_revokes_its_link(chain):
    event = chain.event()
    cid = event["data"]["convocation_id"]
    await chain.publish(event)
    link = find_link((await chain.email_to(event["data"]["patient"]["email"]))["text"])
    await chain.publish(
        {
            **event,
            "event_id": str(uuid.uuid4()),
            "type": "convocation.cancelled",
            "data": {"convocation_id": cid, "reason": "patient called"},
        }
    )
    reports = await chain.upstream("convocation.status.v1", cid, until=lambda es: "cancelled" in statuses(es))
    assert statuses(reports)[-1] == "cancelled"
    page = await _page_when(chain, link, 410)
    assert 'data-state="cancelled"' in page.text
    assert "+41 22 372 33 11" in page.text  # whom to call


async def test_a_new_convocation_for_the_same_appointment_supersedes_the_old_link(chain):
    first = chain.event()
    cid = first["data"]["convocation_id"]
    address = first["data"]["patient"]["email"]
    await chain.publish(first)
    old_link = find_link((await chain.email_to(address))["text"])
    second = {**first, "event_id": str(uuid.uuid4())}
    await chain.publish(second)
    await eventually(lambda: len(chain.emails_to(address)) == 2, what="the second e-mail")
    new_link = find_link(chain.emails_to(address)[-1]["text"])
    assert new_link != old_link
    page = await _page_when(chain, old_link, 410)
    assert 'data-state="superseded"' in page.text
    assert PatientClient(new_link).open_link().status_code == 200
    reports = await chain.upstream("convocation.status.v1", cid, until=lambda es: statuses(es).count("sealed") == 2)
    assert "superseded" in statuses(reports)


async def test_an_expired_message_destroys_its_ciphertext_and_the_link_says_expired(chain):
    event = chain.event()
    cid = event["data"]["convocation_id"]
    await chain.publish(event)
    link = find_link((await chain.email_to(event["data"]["patient"]["email"]))["text"])
    await chain.db.execute(
        "update issuer.convocation set expires_at = now() - interval '1 second' where id = $1", uuid.UUID(cid)
    )
    page = await _page_when(chain, link, 410)
    assert 'data-state="expired"' in page.text
    row = await chain.db.fetchrow(
        "select document_ciphertext, details_ciphertext from access_portal.message where convocation_id = $1",
        uuid.UUID(cid),
    )
    assert row["document_ciphertext"] is None and row["details_ciphertext"] is None
    await chain.wait_status(cid, "expired")


async def test_a_letter_not_downloaded_by_the_deadline_goes_to_paper(chain):
    event = chain.event()
    cid = event["data"]["convocation_id"]
    await chain.publish(event)
    await chain.wait_status(cid, "e-mailed")
    # As if the appointment were now 47 h away and the message sealed three days ago (deadline 48 h).
    await chain.db.execute(
        "update issuer.convocation set appointment_at = now() + interval '47 hours',"
        " sealed_at = now() - interval '3 days' where id = $1",
        uuid.UUID(cid),
    )
    posted = await chain.postal(cid)
    assert posted[0]["data"]["reason"] == "not-downloaded"
    await chain.wait_status(cid, "postal-fallback")


async def test_an_appointment_in_the_past_is_dead_lettered_with_its_reason(chain):
    event = chain.event(starts_at=datetime.now(timezone.utc) - timedelta(days=1))
    await chain.publish(event)
    parked = await chain.dead_letters(f"{chain.exchange}.issuer.convocation.created.v1", {event["event_id"]})
    assert parked[event["event_id"]].headers["x-rejected-reason"] == "appointment-in-past"


@pytest.mark.parametrize(
    "language,title", [("fr", "Convocation"), ("de", "Aufgebot"), ("it", "Convocazione"), ("en", "Convocation")]
)
async def test_without_a_pdf_the_issuer_renders_the_letter_in_the_patients_language(chain, language, title):
    e164, national = random_mobile()
    event = chain.event(pdf=None, language=language, mobile=national)
    event["data"]["document_pdf_base64"] = None
    await chain.publish(event)
    patient = PatientClient(find_link((await chain.email_to(event["data"]["patient"]["email"]))["text"]))
    patient.request_code(national)
    patient.enter_code(code_of(await chain.sms_to(e164)))
    pdf = patient.download("pdf").content
    assert pdf.startswith(b"%PDF-")
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert title in text and "Marie Dupont" in text and "+41 22 372 33 11" in text
    # Issue 20, item 14: the letter the patient downloads is tagged, in the patient's language.
    root = PdfReader(io.BytesIO(pdf)).trailer["/Root"]
    assert "/StructTreeRoot" in root and bool(root["/MarkInfo"]["/Marked"])
    assert root["/Lang"] == {"fr": "fr-CH", "de": "de-CH", "it": "it-CH", "en": "en-GB"}[language]


async def _page_when(chain, link: str, status: int, timeout: float = PATIENCE):
    patient = PatientClient(link)
    answers: list[int] = []

    def answered():
        page = patient.open_link()
        answers.append(page.status_code)
        return page if page.status_code == status else None

    return await eventually(
        answered, timeout, what=f"the answer {status}", seen=lambda: f"the link kept answering {answers[-1]}"
    )


async def test_an_email_requested_delivered_again_never_sends_a_second_email(chain):
    """Even under a new event id (a replay from a dead-letter queue, say), the mailer's own record of
    the message stops a second e-mail once the first was accepted."""
    from devstack.sample import sample_pdf
    from issuer import domain
    from issuer.settings import IssuerSettings
    from shared.contracts import ConvocationCreatedV1, Envelope, envelope

    settings = IssuerSettings()
    keys = domain.SealingKeys(
        settings.seal_keys, settings.patient_ref_key, settings.mailer_field_key, settings.portal_field_key
    )
    created = Envelope[ConvocationCreatedV1].model_validate(chain.event()).data
    expires_at = created.appointment.starts_at
    sealed = domain.seal_convocation(
        created, sample_pdf(), keys, expires_at=expires_at, send_email=True, period=await chain.period_key(expires_at)
    )
    await chain.publish(
        json.loads(envelope(sealed.message, producer="issuer", correlation_id=created.convocation_id).model_dump_json())
    )
    for _ in range(2):
        event = envelope(sealed.email, producer="issuer", correlation_id=created.convocation_id)
        await chain.publish(json.loads(event.model_dump_json()))
    await chain.email_to(created.patient.email)
    barrier = chain.event()
    await chain.publish(barrier)
    await chain.email_to(barrier["data"]["patient"]["email"])
    await __import__("asyncio").sleep(0.5)
    assert len(chain.emails_to(created.patient.email)) == 1
