"""The whole delivery chain on real RabbitMQ, Postgres, SMTP and SMS provider, services as processes."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import httpx

from devstack.stack import http
from shared import crypto
from tests.e2e.conftest import code_of, random_mobile
from tests.patient import PatientClient, find_link

pytestmark = __import__("pytest").mark.e2e


async def test_patient_receives_link_types_number_and_code_and_downloads_the_identical_pdf(chain):
    e164, national = random_mobile()
    event = chain.event(mobile=national)
    cid = event["data"]["convocation_id"]
    pdf_sent = base64.b64decode(event["data"]["document_pdf_base64"])

    await chain.publish(event)
    mail = await chain.email_to(event["data"]["patient"]["email"])
    link = find_link(mail["text"])
    assert link in (mail["html"] or "")
    await chain.wait_status(cid, "e-mailed")

    patient = PatientClient(link)
    await chain.portal_copy(patient.message_id)
    page = patient.open_link()
    assert page.status_code == 200
    assert "+41 79 *** ** " + e164[-2:] in page.text  # masked hint of the number on file

    sent = patient.request_code("0041 " + national[1:])  # another usual way of writing the same number
    assert sent.status_code == 303
    sms = await chain.sms_to(e164)
    assert sms["body"].rstrip().endswith(f"#{code_of(sms)}")
    assert "@127.0.0.1:" in sms["body"]  # origin-bound line for autofill

    verified = patient.enter_code(code_of(sms))
    assert verified.status_code == 303 and verified.headers["location"].endswith("/document")

    download = patient.download("pdf")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/pdf"
    assert "attachment" in download.headers["content-disposition"]
    assert download.content == pdf_sent
    await chain.wait_status(cid, "downloaded")

    history = await chain.db.fetch(
        "select status, at from issuer.status_history where convocation_id = $1 order by id",
        __import__("uuid").UUID(cid),
    )
    assert [h["status"] for h in history] == ["sealed", "e-mailed", "downloaded"]
    assert all(h["at"] is not None for h in history)


async def test_the_same_event_published_twice_gives_exactly_one_email(chain):
    event = chain.event()
    address = event["data"]["patient"]["email"]
    await chain.publish(event)
    await chain.publish(event)
    await chain.email_to(address)
    # A later convocation acts as a barrier: once its e-mail is out, the duplicate has been handled.
    barrier = chain.event()
    await chain.publish(barrier)
    await chain.email_to(barrier["data"]["patient"]["email"])
    await asyncio.sleep(0.5)
    assert len(chain.emails_to(address)) == 1
    assert (
        await chain.db.fetchval(
            "select count(*) from issuer.convocation where id = $1",
            __import__("uuid").UUID(event["data"]["convocation_id"]),
        )
        == 1
    )


async def test_a_malformed_event_is_dead_lettered_with_its_reason_and_the_next_one_goes_through(chain):
    queue = f"{chain.exchange}.issuer.convocation.created.v1"
    bad = chain.event()
    bad["data"]["patient"]["mobile"] = "12"
    bad["data"].pop("appointment")
    await chain.publish(bad)
    await chain.publish(b"{not json", routing_key="convocation.created.v1", message_id="not-json-1")
    good = chain.event()
    await chain.publish(good)
    await chain.email_to(good["data"]["patient"]["email"])

    by_id = await chain.dead_letters(queue, {bad["event_id"], "not-json-1"})
    assert bad["event_id"] in by_id and "not-json-1" in by_id
    invalid = by_id[bad["event_id"]]
    assert invalid.headers["x-rejected-reason"] == "invalid-event"
    detail = invalid.headers["x-rejected-detail"]
    assert "data.appointment" in detail and "data.patient.mobile" in detail
    assert json.loads(invalid.body) == bad  # the message is kept untouched for replay
    assert by_id["not-json-1"].headers["x-rejected-reason"] == "malformed-json"
    metrics = http("GET", chain.stack.url("issuer") + "/metrics").text  # what the SRE's alert reads
    for reason in ("invalid-event", "malformed-json"):
        assert f'convocations_dead_lettered_total{{queue="{queue}",reason="{reason}",service="issuer"}}' in metrics


async def test_opening_the_link_with_get_or_head_sends_no_sms_and_changes_nothing(chain):
    e164, national = random_mobile()
    event = chain.event(mobile=national)
    await chain.publish(event)
    mail = await chain.email_to(event["data"]["patient"]["email"])
    link = find_link(mail["text"])

    async def portal_state() -> list:
        return [
            await chain.db.fetchval(f"select count(*) from access_portal.{t}")
            for t in ("challenge", "session", "release", "phone_binding")
        ] + [await chain.db.fetchval("select count(*) from access_portal.outbox")]

    before = await portal_state()
    with httpx.Client(timeout=10) as scanner:
        for _ in range(3):
            get = scanner.get(link.split("#")[0])
            head = scanner.head(link.split("#")[0])
            assert get.status_code == 200 and head.status_code == 200 and head.content == b""
            for response in (get, head):
                assert "session" not in response.headers.get("set-cookie", "")  # no session from a GET
    await asyncio.sleep(1.0)
    assert await portal_state() == before
    assert chain.sms_count(e164) == 0
    assert await chain.status(event["data"]["convocation_id"]) == "e-mailed"
    views = await chain.db.fetchval(
        "select count(*) from portal_audit.access_audit where message_id = $1 and action = 'view'",
        __import__("uuid").UUID(link.split("/m/")[1].split("#")[0]),
    )
    assert views == 6  # seen, audited as views, nothing else


async def test_no_table_holds_the_pdf_link_secret_code_or_phone_number_in_clear(chain):
    e164, national = random_mobile()
    event = chain.event(mobile=national)
    address = event["data"]["patient"]["email"]
    pdf_sent = base64.b64decode(event["data"]["document_pdf_base64"])
    await chain.publish(event)
    link = find_link((await chain.email_to(address))["text"])
    patient = PatientClient(link)
    await chain.portal_copy(patient.message_id)
    patient.request_code(national)
    code = code_of(await chain.sms_to(e164))
    patient.enter_code(code)
    assert patient.download("pdf").content == pdf_sent
    await chain.wait_status(event["data"]["convocation_id"], "downloaded")

    dump = await chain.dump_all_tables()
    secret = crypto.secret_of_fragment(link.split("#")[1])  # the secret, without its check
    forbidden = {
        "link secret": secret,
        "link secret (hex)": base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4)).hex(),
        "PDF (base64)": event["data"]["document_pdf_base64"][:40],
        "PDF (hex)": pdf_sent[:40].hex(),
        "PDF (text)": pdf_sent[:40].decode("latin-1"),
        "phone E.164": e164,
        "phone national": national.replace(" ", ""),
        "phone digits": e164[3:],
        "code": f":{code}",
        "e-mail": address,
    }
    leaks = [name for name, value in forbidden.items() if value in dump]
    assert not leaks, f"found in clear at rest: {leaks}"
    # The code as a whole token: the same six digits inside a hash, an id or a time's fraction are chance.
    assert not re.search(rf"(?<![0-9A-Za-z.]){code}(?![0-9A-Za-z])", dump), "the SMS code is stored in clear"
    hashes = await chain.db.fetch("select code_hash from access_portal.challenge")
    assert all(code not in h["code_hash"] for h in hashes)

    logs = chain.stack.logs()
    log_leaks = [name for name, value in {**forbidden, "code line": f"#{code}"}.items() if value in logs]
    assert not log_leaks, f"found in the services' logs: {log_leaks}"


async def test_every_event_of_the_chain_has_somewhere_to_go(chain):
    """After whole patient journeys, no outbox holds an event the broker refused (an event without a
    bound queue would be retried forever and its alert would fire)."""
    e164, national = random_mobile()
    event = chain.event(mobile=national)
    await chain.publish(event)
    patient = PatientClient(find_link((await chain.email_to(event["data"]["patient"]["email"]))["text"]))
    await chain.portal_copy(patient.message_id)
    patient.request_code(national)
    patient.enter_code(code_of(await chain.sms_to(e164)))
    patient.download("pdf")
    patient.download("ics")
    await chain.wait_status(event["data"]["convocation_id"], "downloaded")
    await asyncio.sleep(1.0)
    for schema in ("issuer", "mailer", "sms_gateway", "access_portal"):
        refused = await chain.db.fetch(f"select event_type, last_error from {schema}.outbox where attempts > 0")
        assert not refused, f"{schema} could not publish: {[dict(r) for r in refused]}"
