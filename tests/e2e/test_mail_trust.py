"""Issue 11: mail that arrives and tells the truth. DKIM verified on what the relay received, late
bounces delivered over SMTP to the mailer's listener, notices (replacement, withdrawal, reminder),
the public contact, and nothing of the patient left in the mailer after expiry."""

from __future__ import annotations

import asyncio
import uuid
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from urllib.parse import urlsplit

import aiosmtplib
import dkim
import pytest

from mailer.signing import public_key_b64
from shared.contracts import MessageRevokedV1
from shared.i18n import format_appointment
from tests.e2e.conftest import code_of, random_mobile
from tests.e2e.test_delivery_lifecycle import statuses
from tests.e2e.test_portal_helpers import publish_as_service
from tests.patient import PatientClient, find_link
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def raw_of(email: dict) -> bytes:
    raw = email["raw"]
    return raw if isinstance(raw, bytes) else raw.encode()


def dsn(
    to: str, recipient: str = "someone@example.ch", *, action: str = "failed", status: str = "5.1.1", padding: int = 0
) -> bytes:
    """A delivery status notification as a receiving MTA sends it back (RFC 3464) about ``recipient``."""
    return (
        f"From: MAILER-DAEMON@mx.example.ch\r\nTo: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n" + "x" * padding + "\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.ch\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} The e-mail account does not exist\r\n"
        "\r\n--b--\r\n"
    ).encode()


async def bounce(stack, to: str, message: bytes | EmailMessage) -> None:
    """Deliver to the mailer's bounce listener as the relay forwards a bounce: null sender (MAIL FROM:<>)."""
    raw = message if isinstance(message, bytes) else message.as_bytes()
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=stack.ports["mailer-bounces"], start_tls=False, timeout=10
    ) as client:
        await client.sendmail("", [to], raw)


async def sent_email(chain, **kw) -> tuple[dict, dict]:
    event = chain.event(**kw)
    await chain.publish(event)
    email = await chain.email_to(event["data"]["patient"]["email"])
    await chain.wait_status(event["data"]["convocation_id"], "e-mailed")
    return event, email


async def test_the_relay_receives_a_signed_email_that_verifies_with_the_published_key(chain, dkim_key):
    event, email = await sent_email(chain)
    raw = raw_of(email)
    records = {b"s2026b._domainkey.hug.example.": f"v=DKIM1; k=rsa; p={public_key_b64(dkim_key.read_bytes())}".encode()}

    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: records.get(name))
    assert not dkim.verify(
        raw.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=lambda name, timeout=5: records.get(name)
    )
    message = message_from_bytes(raw, policy=default_policy)
    assert message["Auto-Submitted"] == "auto-generated"
    assert [p.get_content_type() for p in message.walk()] == ["multipart/alternative", "text/plain", "text/html"]
    # Per-message envelope sender (VERP) for late bounces, and the sender's domain signs.
    assert email["mail_from"].startswith("bounces+") and email["mail_from"].endswith("@hug.example")
    text = email["text"]
    host = chain.stack.portal_base_url.split("//")[1].split(":")[0]
    assert "Comment reconnaître un véritable e-mail" in text and f"mène toujours à {host}" in text
    # The public contact, never the department's own address (it would name the specialty).
    assert "patients@hug.example" in text and "cardiologie@hug.example" not in raw.decode()


async def test_a_late_hard_bounce_gives_email_failed_and_exactly_one_paper_copy(chain):
    event, email = await sent_email(chain)
    cid = event["data"]["convocation_id"]
    for _ in range(2):  # the relay may forward the same DSN twice
        await bounce(chain.stack, email["mail_from"], dsn(email["mail_from"], event["data"]["patient"]["email"]))
    reports = await chain.upstream("convocation.status.v1", cid, until=lambda es: "postal-fallback" in statuses(es))
    assert statuses(reports) == ["sealed", "e-mailed", "bounced", "postal-fallback"]
    assert next(e for e in reports if e["data"]["status"] == "bounced")["data"]["detail"] == "550 late-bounce 5.1.1"
    await asyncio.sleep(1.5)
    posted = await chain.postal(cid)
    assert [p["data"]["reason"] for p in posted] == ["email-failed"]
    row = await chain.db.fetchrow(
        "select status, last_code from mailer.email where convocation_id = $1", uuid.UUID(cid)
    )
    assert (row["status"], row["last_code"]) == ("bounced", 550)
    mailer_log = chain.stack.log_file("mailer").read_text()
    assert event["data"]["patient"]["email"] not in mailer_log
    assert email["mail_from"].split("@")[0].split("+")[1] not in mailer_log  # the bounce token


async def test_forged_bounces_soft_bounces_auto_replies_and_oversized_mail_change_nothing(chain):
    event, email = await sent_email(chain)
    cid = event["data"]["convocation_id"]
    domain = email["mail_from"].rpartition("@")[2]
    forged = "bounces+" + "a" * 24 + "@" + domain
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await bounce(chain.stack, forged, dsn(forged))
    assert refused.value.recipients[0].code == 550
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await bounce(chain.stack, "postmaster@" + domain, dsn("postmaster@" + domain))
    await bounce(chain.stack, email["mail_from"], dsn(email["mail_from"], action="delayed", status="4.2.2"))
    out_of_office = EmailMessage()
    out_of_office["From"], out_of_office["Subject"] = event["data"]["patient"]["email"], "Absent"
    out_of_office["Auto-Submitted"] = "auto-replied"
    out_of_office.set_content("Je suis absente jusqu'au 15.")
    await bounce(chain.stack, email["mail_from"], out_of_office)
    huge = dsn(email["mail_from"], padding=300 * 1024)  # BOUNCE_MAX_BYTES is 256 KiB
    with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
        await bounce(chain.stack, email["mail_from"], huge)
    assert too_big.value.code == 552
    await asyncio.sleep(2)
    assert await chain.status(cid) == "e-mailed"
    assert (
        await chain.db.fetchval("select status from mailer.email where convocation_id = $1", uuid.UUID(cid)) == "sent"
    )


async def test_a_hard_bounce_naming_another_recipient_leaves_the_letter_e_mailed(chain):
    """Issue 18, item 9: a report that another address failed (a copy the patient's mailbox forwarded, or a
    forged report sent to the bounce address seen in the patient's e-mail) switched the letter to paper."""
    event, email = await sent_email(chain)
    cid = event["data"]["convocation_id"]
    await bounce(chain.stack, email["mail_from"], dsn(email["mail_from"], "forwarded-copy@elsewhere.example"))
    await asyncio.sleep(2)
    assert await chain.status(cid) == "e-mailed"
    assert (
        await chain.db.fetchval("select status from mailer.email where convocation_id = $1", uuid.UUID(cid)) == "sent"
    )
    # The address is matched by its keyed hash: the mailer keeps none in clear, in any case.
    assert (
        await chain.db.fetchval(
            "select count(*) from mailer.bounce_token where recipient_hash like '%' || $1 || '%'",
            event["data"]["patient"]["email"],
        )
        == 0
    )
    # The same report naming the letter's own address (in another case) does count.
    await bounce(chain.stack, email["mail_from"], dsn(email["mail_from"], event["data"]["patient"]["email"].upper()))
    await chain.wait_status(cid, "postal-fallback")


async def test_the_bounce_listener_closes_a_connection_guessing_tokens_and_refuses_deep_mime_quietly(chain):
    """Issue 18, item 9: a client could try tokens without end on one connection, and a report nested
    thousands of MIME levels deep made the listener log a traceback."""
    _, email = await sent_email(chain)
    domain = email["mail_from"].rpartition("@")[2]
    log = chain.stack.log_file("mailer")
    logged_before = len(log.read_bytes())
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=chain.stack.ports["mailer-bounces"], start_tls=False, timeout=10
    ) as client:
        await client.mail("")
        codes = []
        for n in range(12):
            try:
                codes.append((await client.rcpt("bounces+" + "a" * 23 + "bcdefghijklm"[n] + "@" + domain))[0])
            except aiosmtplib.SMTPRecipientRefused as refused:
                codes.append(refused.code)
            except aiosmtplib.SMTPServerDisconnected:
                codes.append("closed")
                break
    assert codes[:10] == [550] * 10 and codes[10] == 421 and codes[-1] in (421, "closed"), codes
    nested = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(1200))
    deep = (
        b"From: MAILER-DAEMON@mx.example.ch\r\nMIME-Version: 1.0\r\n"
        + nested
        + b"Content-Type: text/plain\r\n\r\nx\r\n"
        + b"".join(b"--b%d--\r\n" % i for i in reversed(range(1200)))
    )
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await bounce(chain.stack, email["mail_from"], deep)
    assert refused.value.code == 554
    await asyncio.sleep(0.5)
    assert b"Traceback" not in log.read_bytes()[logged_before:]


async def test_a_replacement_says_so_in_the_patients_language_once(chain):
    first, _ = await sent_email(chain, language="de")
    address = first["data"]["patient"]["email"]
    await chain.publish({**first, "event_id": str(uuid.uuid4())})
    await eventually(lambda: _count(chain, address, 2))
    replacement = chain.emails_to(address)[-1]
    assert "Diese Nachricht ersetzt diejenige, die wir Ihnen am" in replacement["text"]
    assert "Ihr Aufgebot hat sich geändert" in replacement["text"]  # what happened: the hospital changed it
    assert find_link(replacement["text"]) != find_link(chain.emails_to(address)[0]["text"])
    assert "ersetzt" not in chain.emails_to(address)[0]["text"]
    await asyncio.sleep(1.5)
    assert len(chain.emails_to(address)) == 2


async def test_a_cancellation_tells_the_patient_once_then_forgets_the_address(chain):
    event, _ = await sent_email(chain, language="it")
    cid, address = event["data"]["convocation_id"], event["data"]["patient"]["email"]
    cancel = {**event, "type": "convocation.cancelled", "data": {"convocation_id": cid, "reason": "annulé"}}
    for _ in range(2):
        await chain.publish({**cancel, "event_id": str(uuid.uuid4())})
    await eventually(lambda: _count(chain, address, 2))
    notice = chain.emails_to(address)[-1]
    # It says what happened (cancelled, not "withdrawn") and whom to call (issue 20, item 9).
    assert "ha annullato la convocazione" in notice["text"] and "annullata" in notice["subject"]
    assert "chiami l’ospedale al" in notice["text"] and "patients@hug.example" in notice["text"]
    assert "/m/" not in notice["text"] and "ritirat" not in notice["text"]
    assert message_from_bytes(raw_of(notice))["Auto-Submitted"] == "auto-generated"
    await eventually(lambda: _recipient_gone(chain, cid))
    await asyncio.sleep(1.5)
    assert len(chain.emails_to(address)) == 2


async def test_a_withdrawal_by_the_secretariat_says_so_and_whom_to_call(chain):
    """Issue 20, item 9: the secretariat's withdrawal is told as such (before, only a cancellation was told)."""
    event, _ = await sent_email(chain, language="de")
    cid, address = event["data"]["convocation_id"], event["data"]["patient"]["email"]
    message_id = await chain.db.fetchval("select message_id from issuer.convocation where id = $1", uuid.UUID(cid))
    withdrawn = MessageRevokedV1(message_id=message_id, convocation_id=uuid.UUID(cid), reason="withdrawn")
    for _ in range(2):  # redelivered: told once
        await publish_as_service(chain, withdrawn, producer="issuer")
    await eventually(lambda: _count(chain, address, 2))
    notice = chain.emails_to(address)[-1]
    assert "vom Sekretariat zurückgezogen" in notice["subject"]
    assert "Das Sekretariat hat das Aufgebot zurückgezogen" in notice["text"]
    assert "Um den Grund zu erfahren, rufen Sie das Spital unter" in notice["text"]
    assert "annulliert" not in notice["text"] and "/m/" not in notice["text"]
    await asyncio.sleep(1.5)
    assert len(chain.emails_to(address)) == 2


async def test_the_email_says_until_when_the_message_opens_in_the_patients_language(chain):
    """Issue 17, item 4: the day and time the link stops opening the letter, as the portal's pages write it."""
    event, email = await sent_email(chain, language="it")
    expires_at = await chain.db.fetchval(
        "select expires_at from issuer.convocation where id = $1", uuid.UUID(event["data"]["convocation_id"])
    )
    until = format_appointment(expires_at, "it")
    assert f"Può aprire questo messaggio fino a {until}." in email["text"]
    assert f"Può aprire questo messaggio fino a {until}." in email["html"]


async def test_a_reminder_goes_once_before_the_paper_deadline_in_the_patients_language(chain):
    event, _ = await sent_email(chain, language="en")
    cid, address = event["data"]["convocation_id"], event["data"]["patient"]["email"]
    await _into_the_reminder_window(chain, cid)
    await eventually(lambda: _count(chain, address, 2))
    reminder = chain.emails_to(address)[-1]
    assert "You have not opened the secure message" in reminder["text"]
    assert "/m/" not in reminder["text"]
    await asyncio.sleep(4)  # several sweeps later (one a second): still one reminder
    assert len(chain.emails_to(address)) == 2
    assert await chain.status(cid) == "e-mailed"


async def test_no_reminder_for_a_downloaded_letter(chain):
    e164, national = random_mobile()
    event, email = await sent_email(chain, mobile=national)
    cid, address = event["data"]["convocation_id"], event["data"]["patient"]["email"]
    patient = PatientClient(find_link(email["text"]))
    patient.request_code(national)
    patient.enter_code(code_of(await chain.sms_to(e164)))
    assert patient.download("pdf").status_code == 200
    await chain.wait_status(cid, "downloaded")
    await _into_the_reminder_window(chain, cid)
    await asyncio.sleep(4)  # several sweeps
    assert len(chain.emails_to(address)) == 1
    assert await chain.db.fetchval("select reminded_at from issuer.convocation where id = $1", uuid.UUID(cid)) is None


async def test_nothing_of_the_patient_survives_expiry_and_no_notice_follows(chain):
    event, email = await sent_email(chain)
    cid, address = event["data"]["convocation_id"], event["data"]["patient"]["email"]
    other, other_email = await sent_email(chain)
    # The issuer's expiry (message.revoked expired) for one; the mailer's own clock for the other.
    await chain.db.execute(
        "update issuer.convocation set expires_at = now() - interval '1 second' where id = $1", uuid.UUID(cid)
    )
    await chain.db.execute(
        "update mailer.email set expires_at = now() - interval '1 second' where convocation_id = $1",
        uuid.UUID(other["data"]["convocation_id"]),
    )
    await chain.wait_status(cid, "expired")
    for convocation in (cid, other["data"]["convocation_id"]):
        await eventually(lambda c=convocation: _recipient_gone(chain, c))
    # After expiry: a reminder or a bounce for it finds nothing to act on.
    await _into_the_reminder_window(chain, other["data"]["convocation_id"])
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await bounce(chain.stack, email["mail_from"], dsn(email["mail_from"], address))
    await asyncio.sleep(4)  # several sweeps
    assert len(chain.emails_to(address)) == 1 and len(chain.emails_to(other["data"]["patient"]["email"])) == 1
    assert (
        await chain.db.fetchval(
            "select outcome from mailer.notice n join mailer.email e using (message_id) where e.convocation_id = $1",
            uuid.UUID(other["data"]["convocation_id"]),
        )
        == "skipped"
    )


async def _count(chain, address: str, n: int) -> bool:
    return len(chain.emails_to(address)) >= n


async def _recipient_gone(chain, cid: str) -> bool:
    row = await chain.db.fetchrow(
        "select e.recipient, (select count(*) from mailer.bounce_token t where t.message_id = e.message_id) tokens"
        " from mailer.email e where e.convocation_id = $1 order by e.created_at desc limit 1",
        uuid.UUID(cid),
    )
    return row["recipient"] is None and row["tokens"] == 0


async def _into_the_reminder_window(chain, cid: str) -> None:
    # As if the appointment were 3 days away and the letter sealed a week ago: the paper deadline
    # (48 h before) is in a day, the reminder (2 days before the deadline) is due.
    await chain.db.execute(
        "update issuer.convocation set appointment_at = now() + interval '3 days',"
        " sealed_at = now() - interval '7 days' where id = $1",
        uuid.UUID(cid),
    )


async def test_before_the_code_only_the_public_contact_shows_the_departments_contact_only_after(chain):
    e164, national = random_mobile()
    event = chain.event(mobile=national)
    event["data"]["appointment"]["department"].update(
        secretariat_phone="+41 22 372 99 99", secretariat_email="oncologie@hug.example"
    )
    event["data"]["public_contact"] = {"phone": "+41 22 372 40 00", "email": "accueil@hug.example"}
    await chain.publish(event)
    email = await chain.email_to(event["data"]["patient"]["email"])
    assert "+41 22 372 40 00" in email["text"] and "accueil@hug.example" in email["text"]
    assert "oncologie" not in raw_of(email).decode() and "372 99 99" not in raw_of(email).decode()
    patient = PatientClient(find_link(email["text"]))
    before = [patient.open_link()]
    assert patient.request_code(national).status_code == 303
    path = urlsplit(patient.page_url).path
    before.append(patient.get(path + "/code"))
    for page in before:
        assert "+41 22 372 40 00" in page.text and "accueil@hug.example" in page.text
        assert "oncologie" not in page.text and "372 99 99" not in page.text
    patient.enter_code(code_of(await chain.sms_to(e164)))
    after = patient.get(path + "/document")
    assert after.status_code == 200
    assert "+41 22 372 99 99" in after.text and "oncologie@hug.example" in after.text


async def test_a_letter_cancelled_while_its_email_waits_for_a_retry_is_never_sent(chain):
    event = chain.event()
    cid, address = event["data"]["convocation_id"], event["data"]["patient"]["email"]
    chain.inbox.smtp_script(["451 4.3.0 Mailbox busy, try again later"])
    await chain.publish(event)
    await eventually(lambda: _email_status(chain, cid, "retrying"))
    await chain.publish(
        {
            **event,
            "event_id": str(uuid.uuid4()),
            "type": "convocation.cancelled",
            "data": {"convocation_id": cid, "reason": None},
        }
    )
    await eventually(lambda: _email_status(chain, cid, "revoked"))
    await asyncio.sleep(4)  # the retry (after 1 s) has come and gone
    assert chain.emails_to(address) == []


async def _email_status(chain, cid: str, status: str) -> bool:
    return (
        await chain.db.fetchval("select status from mailer.email where convocation_id = $1", uuid.UUID(cid)) == status
    )
